import pytest

from nyctaxi.registry import CHALLENGER, CHAMPION, apply_decision, decide_promotion


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


class RecordingClient:
    """The two MlflowClient calls apply_decision makes, recorded."""

    def __init__(self) -> None:
        self.tags: dict[tuple[str, str], str] = {}
        self.aliases: dict[str, str] = {}

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.tags[(version, key)] = value

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = version


def test_a_promotion_tags_both_the_new_champion_and_the_one_it_replaces() -> None:
    client = RecordingClient()
    decision = decide_promotion(4.5, val_month="2023-02", champion_version="3", champion_rmse=4.6)

    apply_decision(client, "m", "4", decision, 4.5, train_month="2023-01", val_month="2023-02")

    assert client.aliases == {CHAMPION: "4"}
    assert client.tags[("4", "promotion")] == decision.reason
    assert client.tags[("3", "replaced")] == f"by v4: {decision.reason}"


def test_a_challenger_leaves_the_champion_untagged() -> None:
    client = RecordingClient()
    decision = decide_promotion(4.7, val_month="2023-02", champion_version="3", champion_rmse=4.6)

    apply_decision(client, "m", "4", decision, 4.7, train_month="2023-01", val_month="2023-02")

    assert client.aliases == {CHALLENGER: "4"}
    assert not any(version == "3" for version, _ in client.tags)
