"""`vidistill predict`: top classes of real video files from models in a real MLflow registry.

A 6-class synthetic set (encoded .avi videos) and its manifest, a flow teacher, an RGB student
and a plain RGB I3D (i3d_tiny, untrained: these tests check what a user sees, not accuracy)
registered through the trainers' own registration path.
"""
from __future__ import annotations

import json

import cv2
import pytest
import torch
from click.testing import CliRunner

from vidistill.datasets.prepare import PrepareConfig
from vidistill.datasets.synthetic import SyntheticConfig, make_synthetic
from vidistill.platform.cli.main import cli
from vidistill.trainers import tracking
from vidistill.trainers.attention_images import CAPTION_HEIGHT
from vidistill.trainers.config import load_config
from vidistill.trainers.models import create_model, create_student, create_teacher

WIDTH, HEIGHT, CLIP, CLIPS = 64, 48, 8, 3
STUDENT, TEACHER, RGB = "models:/tiny-student-rgb/1", "models:/tiny-teacher-flow/1", "models:/tiny-rgb-none/1"


@pytest.fixture(scope="module")
def registry(trainer_home, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    source, prepared = root / "source", root / "prepared"
    make_synthetic(source, SyntheticConfig(classes=6, videos_per_class=1, frames=16, width=WIDTH, height=HEIGHT,
                                           seed=0))
    classes = (source / "classes.txt").read_text().split()
    prepared.mkdir()
    manifest = PrepareConfig(out=prepared, fps=12, width=WIDTH, height=HEIGHT,
                             flow_method="farneback").new_manifest(classes)
    manifest.save(prepared)
    common = [f"data.prepared={prepared}", f"data.root={source}", "data.name=tiny", "model.name=i3d_tiny",
              f"data.clip_length={CLIP}", f"data.test_clips_per_video={CLIPS}"]
    torch.manual_seed(0)
    for role, model, extra in (("teacher", create_teacher("i3d_tiny", num_classes=6), []),
                               ("distill", create_student("i3d_tiny", num_classes=6), [f"distill.teacher={TEACHER}"]),
                               ("rgb", create_model("i3d_tiny", num_classes=6), ["model.attention=none"])):
        config = load_config(overrides=[*common, f"role={role}", *extra])
        tracking.register_model(tracking.create_run(config), model.eval(), config, manifest.content_hash())
    tracking.store_client().set_registered_model_alias("tiny-student-rgb", "champion", "1")
    videos = sorted(source.glob("*/*.avi"))
    return classes, videos


def run(*args):
    result = CliRunner().invoke(cli, ["predict", *map(str, args)])
    return result


def as_json(*args):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_the_student_lists_five_classes_with_their_probabilities(registry):
    classes, videos = registry
    result = run(videos[0], "--model", "models:/tiny-student-rgb@champion")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"model: {STUDENT}")  # the alias, resolved to the version it names
    assert lines[1].startswith(str(videos[0])) and f"{CLIPS} clips" in lines[1]
    ranked = [line.split() for line in lines[2:7]]
    assert [r[0] for r in ranked] == ["1.", "2.", "3.", "4.", "5."]
    assert {r[1] for r in ranked} <= set(classes) and len({r[1] for r in ranked}) == 5
    probabilities = [float(r[2]) for r in ranked]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0 < sum(probabilities) <= 1.0 + 1e-3


def test_json_gives_each_video_its_top_classes_and_a_fusion_averages_the_models(registry):
    classes, videos = registry
    alone = {uri: as_json(videos[0], "--model", uri, "--top", 6)["videos"][0] for uri in (STUDENT, TEACHER)}
    fused = as_json(videos[0], videos[1], "--model", STUDENT, "--model", TEACHER, "--top", 6)
    assert fused["models"] == [STUDENT, TEACHER] and fused["attention"] is None
    assert [v["video"] for v in fused["videos"]] == [str(videos[0]), str(videos[1])]
    for video in fused["videos"]:
        assert video["clips"] == CLIPS and video["frames"] > 0
        assert [set(entry) for entry in video["top"]] == [{"class", "probability"}] * 6
        assert {entry["class"] for entry in video["top"]} == set(classes)
        assert sum(entry["probability"] for entry in video["top"]) == pytest.approx(1.0, abs=1e-5)
    # Late fusion: the mean of the student's and the teacher's (flow computed from the video) scores.
    by_class = {uri: {e["class"]: e["probability"] for e in v["top"]} for uri, v in alone.items()}
    assert by_class[STUDENT] != by_class[TEACHER]
    for entry in fused["videos"][0]["top"]:
        expected = (by_class[STUDENT][entry["class"]] + by_class[TEACHER][entry["class"]]) / 2
        assert entry["probability"] == pytest.approx(expected, abs=1e-5)
    top5 = as_json(videos[1], "--model", RGB)["videos"][0]["top"]
    assert len(top5) == 5 and sum(e["probability"] for e in top5) <= 1.0 + 1e-6


def test_attention_is_drawn_over_the_frames_as_in_fig2(registry, tmp_path):
    _, videos = registry
    image_path = tmp_path / "maps.png"
    out = as_json(videos[0], videos[1], "--model", STUDENT, "--model", TEACHER, "--attention", image_path)
    assert out["attention"] == str(image_path)
    image = cv2.imread(str(image_path))
    # Per video, the middle clip's first and last frame; panels: frame, student motion, teacher
    # motion, student appearance, colour bar (34 px).
    assert image.shape == (2 * 2 * (HEIGHT + CAPTION_HEIGHT), 4 * WIDTH + 34, 3)
    gif = tmp_path / "maps.gif"
    result = run(videos[0], "--model", STUDENT, "--attention", gif)
    assert result.exit_code == 0 and f"attention maps: {gif}" in result.output
    from PIL import Image

    with Image.open(gif) as animation:
        assert animation.n_frames == CLIP  # one per frame of the clip
        assert animation.size == (3 * WIDTH + 34, HEIGHT + CAPTION_HEIGHT)  # frame, motion, appearance, bar
    plain = run(videos[0], "--model", RGB, "--attention", tmp_path / "none.png")
    assert plain.exit_code == 0 and "none drawn" in plain.output and not (tmp_path / "none.png").exists()


def test_bad_input_is_named_with_what_to_do(registry, tmp_path):
    _, videos = registry
    missing = run(tmp_path / "nope.mp4", "--model", STUDENT)
    assert missing.exit_code == 2 and "nope.mp4: no such file" in missing.output
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20)
    broken = run(corrupt, "--model", STUDENT)
    assert broken.exit_code == 1 and f"video {corrupt} cannot be decoded" in broken.output
    unknown = run(videos[0], "--model", "models:/no-such-model/3")
    assert unknown.exit_code == 1 and "models:/no-such-model/3 is not in the model registry" in unknown.output
    not_a_uri = run(videos[0], "--model", "student.pt")
    assert not_a_uri.exit_code == 1 and "models:/NAME/VERSION" in not_a_uri.output
    assert "Traceback" not in broken.output + unknown.output + not_a_uri.output


def test_the_graph_runner_off_cuda_is_the_eager_model():
    from vidistill.trainers.graphs import GraphedInference

    torch.manual_seed(0)
    model = create_student("i3d_tiny", num_classes=6).eval()
    runner = GraphedInference(model, enabled=True)  # asked for, but the input is on the CPU
    x = torch.randn(1, 3, CLIP, HEIGHT, WIDTH)
    assert not runner.replays(x) and runner.captured(x)
    with torch.inference_mode():
        eager, replayed = model(x), runner(x)
    torch.testing.assert_close(replayed.logits, eager.logits, rtol=0, atol=0)
    for name in ("motion", "appearance"):
        torch.testing.assert_close(replayed.attention[name].log_probs, eager.attention[name].log_probs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="model.eval"):
        GraphedInference(create_student("i3d_tiny", num_classes=6).train())
