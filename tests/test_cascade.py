"""The cascade's threshold choice on constructed confidences, and its price."""
import numpy as np

from distill.stages.cascade import choose_threshold, price
from distill.stats import ModelResult

CONF = [-2.0, -1.0, -0.5, -0.1]
STUDENT_RIGHT = np.array([False, False, True, True])  # the student is wrong exactly where it is least sure
TEACHER_RIGHT = np.array([True, True, True, False])


def accuracy(routed: np.ndarray) -> float:
    return float(np.where(routed, TEACHER_RIGHT, STUDENT_RIGHT).mean())


def test_the_lowest_threshold_reaching_the_bar_routes_only_the_unsure_rows():
    """Breaks caught: routing the confident rows (>= instead of <), or a threshold above the lowest that
    reaches the bar (routing more than needed)."""
    c = choose_threshold(CONF, accuracy, bar=1.0)
    assert c == {"threshold": -0.5, "routed_share": 0.5, "quality": 1.0, "meets": True}


def test_a_bar_the_student_already_reaches_routes_nothing():
    c = choose_threshold(CONF, accuracy, bar=0.5)
    assert c["routed_share"] == 0.0 and c["meets"] and c["threshold"] == -2.0


def test_an_unreachable_bar_gives_the_best_quality_with_the_smallest_share_and_says_so():
    """Routing everything scores 0.75 (the teacher alone); routing the two unsure rows scores 1.0."""
    c = choose_threshold(CONF, lambda routed: min(accuracy(routed), 0.9), bar=0.95)
    assert not c["meets"] and c["quality"] == 0.9 and c["routed_share"] == 0.5


def test_routing_all_is_a_candidate_and_its_threshold_is_finite():
    c = choose_threshold(CONF, lambda routed: float(routed.all()), bar=1.0)
    assert c["routed_share"] == 1.0 and c["threshold"] > -0.1 and np.isfinite(c["threshold"])


def test_price_is_the_student_on_every_request_plus_the_teacher_on_the_routed_share_round_by_round():
    def res(usd, role="distilled student"):
        return ModelResult(name=role, role=role, engine="e", cost_per_1k_usd=usd[1],
                           serving={"usd_per_1k": usd, "cost_per_1k_usd": usd[1], "low": min(usd), "high": max(usd)})
    s, t = res([1.0, 2.0, 3.0]), res([10.0, 20.0, 40.0], "teacher")
    c = ModelResult(name="c", role="cascade", engine="e", cascade={"routed_share": 0.25})
    price(c, s, t)
    assert c.serving["usd_per_1k"] == [3.5, 7.0, 13.0] and c.cost_per_1k_usd == 7.0
    assert (c.serving["low"], c.serving["high"]) == (3.5, 13.0)
