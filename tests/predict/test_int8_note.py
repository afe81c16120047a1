"""``predict`` points a person whose CPU has INT8 dot products (VNNI) but no native bf16 to the INT8 export:
torch's default path runs fp32 there."""

from __future__ import annotations

import argparse

from instaseg.cli.predict import _int8_note
from instaseg.model.cpu_features import int8_without_bf16
from instaseg.model.predictor import Predictor

CASCADE_LAKE = frozenset({"avx2", "fma", "avx512f", "avx512_vnni"})
ALDER_LAKE = frozenset({"avx2", "fma", "avx_vnni"})
ZEN4 = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16"})
ZEN3 = frozenset({"avx2", "fma"})


def test_int8_dot_products_count_only_on_cpus_without_native_bf16():
    assert int8_without_bf16(CASCADE_LAKE) == ["avx512_vnni"]
    assert int8_without_bf16(ALDER_LAKE) == ["avx_vnni"]
    assert int8_without_bf16(ZEN4) == [] and int8_without_bf16(ZEN3) == [] and int8_without_bf16(None) == []


def test_the_note_appears_for_an_fp32_checkpoint_run_under_auto_on_such_a_cpu_only(checkpoint):
    # the precision auto resolves to on a CPU without native bf16
    predictor = Predictor(checkpoint, device="cpu", precision="fp32")
    auto = argparse.Namespace(precision="auto", checkpoint="runs/x/best.pt")
    note = _int8_note(auto, predictor, CASCADE_LAKE)
    assert note.startswith("note: this CPU has INT8 dot products (avx512_vnni) but no native bf16")
    assert note.endswith("instaseg export runs/x/best.pt --format openvino-int8")
    assert _int8_note(auto, predictor, ZEN3) == "" and _int8_note(auto, predictor, ZEN4) == ""
    asked = argparse.Namespace(precision="fp32", checkpoint="runs/x/best.pt")
    assert _int8_note(asked, predictor, CASCADE_LAKE) == ""  # fp32 was the person's own choice
