"""Pre-flight: a last-level micro-batch that cannot fit fails at once with a clear error.

The tight memory limit is real: a child process caps its own data segment (RLIMIT_DATA) just
above what the model needs at a short length, then asks for the full length.
"""

import subprocess
import sys
import textwrap

CHILD = textwrap.dedent("""
    import resource, sys, torch
    from transformers import AutoModelForCausalLM
    from axolotl_curriculum.run.preflight import (PROBE_FIX, PreflightError, full_length_batch,
                                                  preflight)

    model = AutoModelForCausalLM.from_pretrained(sys.argv[1])
    vocab = model.config.vocab_size
    short = full_length_batch(2, 64, vocab, "cpu", packed=True)
    preflight(model, short, lambda loss: loss.backward(), "2 rows x 64 tokens")  # fits
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    import psutil
    used = psutil.Process().memory_info().vms
    resource.setrlimit(resource.RLIMIT_DATA, (used + 512 * 2**20, hard))
    huge = full_length_batch(64, 65536, vocab, "cpu", packed=True)  # logits alone: 14 GiB
    try:
        preflight(model, huge, lambda loss: loss.backward(),
                  "the largest micro-batch the curriculum feeds (64 rows x 65536 tokens)")
    except PreflightError as err:
        print("PREFLIGHT:", err)
    # a probe's forward: no gradients, one row of 16M tokens: its embeddings alone do not fit
    prompt = full_length_batch(1, 2**24, vocab, "cpu", packed=False)["input_ids"]
    try:
        preflight(model, {"input_ids": prompt}, None, "the longest probe prompt", PROBE_FIX)
    except PreflightError as err:
        print("PROBE:", err)
        sys.exit(3)
    sys.exit(0)
""")


def test_full_length_that_does_not_fit_fails_clearly(tiny_model):
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tiny_model)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "curriculum pre-flight: the largest micro-batch the curriculum feeds (64 rows x 65536 " \
        "tokens) does not fit in memory" in proc.stdout
    assert "lower micro_batch_size or sequence_len" in proc.stdout
    assert "PROBE: curriculum pre-flight: the longest probe prompt does not fit in memory; " \
        "lower the longest of curriculum.probes.passkey.lengths" in proc.stdout
