"""The CPU's feature flags (Linux ``/proc/cpuinfo``), without torch: what ``--help`` and
:mod:`instaseg.model.precision` read to tell whether this CPU computes in bf16 natively."""

from __future__ import annotations

from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Flags of CPUs that multiply bf16 (or fp16) in hardware: Intel AMX (Sapphire Rapids and later) and
# AVX512-BF16 (Cooper Lake, Sapphire Rapids, AMD Zen 4 and later); AMX-FP16 / AVX512-FP16 for fp16.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
NATIVE_FP16_FLAGS = ("amx_fp16", "avx512_fp16")
# Flags of CPUs with INT8 dot-product instructions, which OpenVINO's INT8 kernels use: AMX-INT8, AVX512-VNNI
# (Cascade Lake, Ice Lake, Zen 4 and later), AVX-VNNI (Alder Lake and later).
INT8_DOT_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


def read_cpu_flags(path: str | Path = CPUINFO) -> frozenset[str] | None:
    """The flags of the first ``flags`` line (x86) or ``Features`` line (ARM) of ``path``; ``None`` when it
    cannot be read (not Linux) or has no such line."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def native_bf16_flags(flags: frozenset[str] | None) -> list[str]:
    """Which of :data:`NATIVE_BF16_FLAGS` ``flags`` has (empty for ``None``)."""
    return [f for f in NATIVE_BF16_FLAGS if flags and f in flags]


def int8_without_bf16(flags: frozenset[str] | None) -> list[str]:
    """Which of :data:`INT8_DOT_FLAGS` ``flags`` has when it has none of :data:`NATIVE_BF16_FLAGS`: a CPU where
    torch's default path runs fp32 but an INT8 export can use the CPU's INT8 instructions (empty otherwise,
    and for ``None``)."""
    if not flags or native_bf16_flags(flags):
        return []
    return [f for f in INT8_DOT_FLAGS if f in flags]


def describe_auto_precision() -> str:
    """What ``--precision auto`` picks on this machine's CPU, from its flags alone (for ``--help``; the run
    also asks torch's oneDNN and says so in its log)."""
    flags = read_cpu_flags()
    if flags is None:
        return f"this machine's CPU flags are unreadable ({CPUINFO}): fp32 on the CPU"
    found = native_bf16_flags(flags)
    if found:
        return f"this CPU has {', '.join(found)}: bf16 on the CPU"
    return f"this CPU has none of {', '.join(NATIVE_BF16_FLAGS)}: fp32 on the CPU"
