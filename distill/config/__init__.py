"""The run configuration: the schema (`schema.py`, `teacher.py`) and how it is loaded (`load.py`)."""
from distill.config.load import (
                                 CONFIGS_DIR,
                                 DEFAULT_CONFIG,
                                 PROJECT_ROOT,
                                 ConfigError,
                                 config_changes,
                                 config_error,
                                 field_help,
                                 find_config,
                                 load_config,
                                 read_saved_config,
                                 resolve_path,
                                 save_config,
)
from distill.config.schema import (
                                 Config,
                                 Eval,
                                 EvalSet,
                                 Export,
                                 FilterSpec,
                                 Generation,
                                 LadderStudent,
                                 Pricing,
                                 Student,
                                 Training,
)
from distill.config.teacher import Adaptation, BatchAPI, BudgetConfig, Endpoint, LocalServer, TeacherConfig, VllmOffline

__all__ = ["CONFIGS_DIR", "DEFAULT_CONFIG", "find_config", "PROJECT_ROOT", "ConfigError", "config_changes", "config_error", "read_saved_config", "field_help", "load_config", "resolve_path",
           "save_config", "Config", "Eval", "EvalSet", "Export", "FilterSpec", "Generation", "LadderStudent", "Pricing", "Student",
           "Training", "Adaptation", "BatchAPI", "BudgetConfig", "Endpoint", "LocalServer", "TeacherConfig", "VllmOffline"]
