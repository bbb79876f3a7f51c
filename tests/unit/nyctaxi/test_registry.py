import pytest

from nyctaxi.registry import CHALLENGER, CHAMPION, decide_promotion


def test_first_version_becomes_champion() -> None:
    decision = decide_promotion(5.0, val_month="2023-02", champion_version=None, champion_rmse=None)
    assert decision.alias == CHAMPION
    assert decision.promoted
    assert "first" in decision.reason


def test_better_model_takes_the_champion_alias() -> None:
    decision = decide_promotion(4.5, val_month="2023-02", champion_version="3", champion_rmse=4.6)
    assert decision.alias == CHAMPION
    assert decision.champion_version == "3"
    assert "beats champion v3" in decision.reason


@pytest.mark.parametrize("new_rmse", [4.6, 4.7, 100.0])
def test_equal_or_worse_model_stays_challenger(new_rmse: float) -> None:
    decision = decide_promotion(
        new_rmse, val_month="2023-02", champion_version="3", champion_rmse=4.6
    )
    assert decision.alias == CHALLENGER
    assert not decision.promoted
    assert "does not beat champion v3" in decision.reason
    assert "2023-02" in decision.reason
