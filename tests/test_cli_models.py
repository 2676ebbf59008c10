"""`vidistill check-models` as a user sees it."""
import json

from click.testing import CliRunner

from vidistill.platform.cli.main import cli

SMALL = ["--model", "i3d_tiny", "--frames", "8", "--size", "64", "--num-classes", "7"]


def test_help_teaches_the_command():
    result = CliRunner().invoke(cli, ["check-models", "--help"])
    assert result.exit_code == 0
    assert "Build the flow teacher and the RGB student" in result.output
    assert "vidistill check-models --model i3d_tiny" in result.output


def test_check_models_prints_parameters_shapes_and_each_loss_term():
    result = CliRunner().invoke(cli, ["check-models", *SMALL])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "flow teacher" in out and "RGB student" in out and "plain RGB I3D" in out
    assert "rgb_clip            2 x 3 x 8 x 64 x 64" in out
    assert "flow_clip           2 x 2 x 8 x 64 x 64" in out
    assert "logits              2 x 7" in out
    for term in ("loss", "ce", "motion_kl", "prior_kl"):
        assert f"\n  {term} " in out
    assert "every time slice sums to 1 (min 1.000000, max 1.000000)" in out


def test_check_models_json_report_adds_up():
    result = CliRunner().invoke(cli, ["check-models", *SMALL, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    loss = report["loss"]
    t, h, w = report["shapes"]["attention_map"][1:]
    # Eq. 8 with lambda1 = 1 and lambda2 = 1 / (T * H * W).
    expected = loss["ce"] + loss["motion_kl"] + loss["prior_kl"] / (t * h * w)
    assert abs(loss["loss"] - expected) < 1e-5
    assert report["parameters"]["student_rgb"] > report["parameters"]["plain_rgb_i3d"]
    assert all(v > 0 for v in report["attention_grad_norms"].values())


def test_invalid_attention_is_refused_with_the_reason():
    result = CliRunner().invoke(cli, ["check-models", *SMALL, "--attention", "prob-res"])
    assert result.exit_code == 2
    assert "invalid: a residual connection breaks the probabilistic model" in result.output

