"""KL controllers: fixed stays, adaptive follows Ziegler et al. 2019 (hand-computed values), state round-trips."""
import pytest

from posttrain.core.kl_control import AdaptiveKLController, FixedKLController, make_kl_controller


def test_fixed_never_moves():
    ctl = make_kl_controller("fixed", init_kl_coef=0.3, target_kl=6.0, kl_horizon=100)
    assert isinstance(ctl, FixedKLController) and not isinstance(ctl, AdaptiveKLController)
    assert ctl.update(100.0, 64) == 0.3 and ctl.update(0.0, 64) == 0.3


@pytest.mark.parametrize("kl, expected", [
    (12.0, 0.2 * (1 + 0.2 * 256 / 10000)),    # KL above target: error clipped at +0.2, beta up to 0.201024
    (6.6, 0.2 * (1 + 0.1 * 256 / 10000)),     # error 6.6 / 6 - 1 = 0.1: beta 0.200512
    (3.0, 0.2 * (1 - 0.2 * 256 / 10000)),     # below target: error clipped at -0.2, beta down to 0.198976
    (6.0, 0.2),                               # on target: unchanged
])
def test_adaptive_moves_toward_target(kl, expected):
    ctl = make_kl_controller("adaptive", init_kl_coef=0.2, target_kl=6.0, kl_horizon=10000)
    assert ctl.update(kl, 256) == pytest.approx(expected, rel=1e-12)
    assert ctl.value == pytest.approx(expected, rel=1e-12)


def test_adaptive_hand_values_and_direction():
    ctl = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert ctl.update(12.0, 256) == pytest.approx(0.201024)
    assert ctl.update(12.0, 256) == pytest.approx(0.201024 * 1.00512)       # keeps rising while KL > target
    down = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert down.update(3.0, 256) == pytest.approx(0.198976)
    assert down.update(float("nan"), 256) == pytest.approx(0.198976)       # a non-finite KL changes nothing


def test_state_dict_round_trip():
    a = AdaptiveKLController(0.2, target=1.0, horizon=50)
    a.update(5.0, 10)
    b = AdaptiveKLController(0.2, target=1.0, horizon=50)
    b.load_state_dict(a.state_dict())
    assert b.value == a.value and b.update(0.1, 10) == a.update(0.1, 10)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="kl_ctl"):
        make_kl_controller("pid", init_kl_coef=0.1, target_kl=6.0, kl_horizon=100)
    with pytest.raises(ValueError, match="target_kl"):
        make_kl_controller("adaptive", init_kl_coef=0.1, target_kl=0.0, kl_horizon=100)
    with pytest.raises(ValueError, match="init_kl_coef"):
        FixedKLController(-1.0)
