"""What every task module shares: ``TaskError`` and the up-front size check of a prompt batch."""

from __future__ import annotations

from probes.errors import ResourceLimitError, WorkbenchError, gib, memory_limit_bytes


class TaskError(WorkbenchError):
    """An unknown task name or a bad task option; the message names the fix."""


BYTES_PER_PROMPT = 12_000
"""Measured peak memory of building one prompt row (PromptBuilder + concat; ~12 KB on
``classify`` with k = 4), before its tokens."""
BYTES_PER_TOKEN = 64


def check_n_prompts(n_prompts: int, tokens_per_prompt: int, task: str = "") -> None:
    """TaskError when ``n_prompts`` is not a positive count; ResourceLimitError, before any work,
    when building that many prompts of ``tokens_per_prompt`` tokens would need more memory than
    ``probes.errors.memory_limit_bytes()`` allows."""
    what = f"{task}: " if task else ""
    if isinstance(n_prompts, bool) or not isinstance(n_prompts, int) or n_prompts < 1:
        raise TaskError(f"{what}n_prompts must be a whole number >= 1, got {n_prompts!r}")
    per = BYTES_PER_PROMPT + BYTES_PER_TOKEN * max(1, int(tokens_per_prompt))
    limit = memory_limit_bytes()
    if n_prompts * per > limit:
        raise ResourceLimitError(
            f"{what}n_prompts={n_prompts} would need about {gib(n_prompts * per)} of memory to build "
            f"(~{per // 1000} KB per prompt of {tokens_per_prompt} tokens); the limit is {gib(limit)} "
            f"(half this machine's memory, or $ICLWB_MAX_MEMORY_GB): use n_prompts <= {limit // per}")
