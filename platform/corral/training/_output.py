"""The output Model: a PEFT adapter (or merged weights), the tokenizer and a model card.

The folder written to ``TrainingJob.output_uri``::

    adapter_config.json, adapter_model.safetensors     (adapter output)
    config.json, model.safetensors                     (merged or full output)
    tokenizer.json, tokenizer_config.json, chat_template.jinja, ...
    README.md                                          (model card, YAML front matter)
    training_metrics.json

The model card's front matter follows the Hugging Face model card metadata: ``license``,
``base_model``, ``base_model_relation`` (``adapter`` or ``finetune``), ``datasets``,
``library_name``, ``tags``, plus Corral's ``chat_template`` (the template trained with)
and ``metrics`` (the final training metrics).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from corral.artifacts import ArtifactSettings, open_store, parse_uri
from corral.training._job import TrainingJob

__all__ = ["model_card", "save_output"]

logger = logging.getLogger(__name__)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, float):
            out[k] = round(v, 6) if math.isfinite(v) else None
        else:
            out[k] = v
    return out


def model_card(job: TrainingJob, *, relation: str, template_name: str, template: str, metrics: dict[str, Any]) -> str:
    """Render the README.md model card.

    Args:
        job: The job.
        relation: ``adapter`` or ``finetune``.
        template_name: Name of the chat template trained with (or ``auto``).
        template: Its Jinja source.
        metrics: Final training metrics.

    Returns:
        Markdown with YAML front matter.
    """
    datasets = [d.name for d in job.datasets]
    front: dict[str, Any] = {
        "license": job.base_model.license,
        "base_model": job.base_model.name,
        "base_model_relation": relation,
        "datasets": datasets,
        "library_name": "peft" if relation == "adapter" else "transformers",
        "tags": ["corral", job.spec.method],
        "chat_template": template_name,
        "metrics": _clean(metrics),
    }
    dataset_licenses = {d.name: d.license for d in job.datasets if d.license}
    if dataset_licenses:
        front["dataset_licenses"] = dataset_licenses
    lora = job.spec.effective_lora
    hp = job.spec.hyperparameters.resolved()
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {job.model_name}",
        "",
        f"Fine-tuned from `{job.base_model.name}` by Corral FineTuneJob `{job.namespace}/{job.name}` "
        f"(method `{job.spec.method}`) on: {', '.join(datasets)}.",
        "",
        f"- Epochs: {hp.epochs}, learning rate {hp.learning_rate}, global batch {hp.global_batch_size}, "
        f"{hp.lr_scheduler} schedule, max sequence length {hp.max_seq_len}, seed {hp.seed}",
    ]
    if lora is not None:
        lines.append(
            f"- LoRA: rank {lora.rank}, alpha {lora.effective_alpha}, dropout {lora.dropout}, "
            f"target modules {', '.join(lora.target_modules)}"
        )
    lines += [
        f"- License: {job.base_model.license} (inherited from the base model; check the datasets' terms too)",
        "",
        "## Chat template",
        "",
        "```jinja",
        template.strip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def save_output(
    model: torch.nn.Module,
    tokenizer: Any,
    job: TrainingJob,
    *,
    template_name: str,
    template: str,
    metrics: dict[str, Any],
) -> str:
    """Write the output Model folder and upload it to ``job.output_uri``.

    Args:
        model: The trained model (``PeftModel`` for lora/qlora), unwrapped.
        tokenizer: The tokenizer (its chat template is set to ``template``).
        job: The job.
        template_name: The chat template's name.
        template: Its source.
        metrics: Final training metrics.

    Returns:
        The output URI.
    """
    from peft import PeftModel

    tokenizer.chat_template = template
    relation = "finetune"
    with tempfile.TemporaryDirectory(prefix="corral-output-") as tmp:
        out = Path(tmp)
        if isinstance(model, PeftModel):
            if job.spec.output.merge:
                merged = model.merge_and_unload()
                merged.save_pretrained(out)
            else:
                relation = "adapter"
                model.save_pretrained(str(out))
                # PEFT records the local base path; the card's base_model names the Model instead.
                cfg_path = out / "adapter_config.json"
                cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
                cfg["base_model_name_or_path"] = job.base_model.name
                cfg_path.write_text(json.dumps(cfg, indent=2), encoding="utf-8")
        else:
            model.save_pretrained(out)  # type: ignore[operator]
        tokenizer.save_pretrained(out)
        card = model_card(job, relation=relation, template_name=template_name, template=template, metrics=metrics)
        (out / "README.md").write_text(card, encoding="utf-8")
        (out / "training_metrics.json").write_text(json.dumps(_clean(metrics), indent=2), encoding="utf-8")
        uri = job.output_uri
        if parse_uri(uri).scheme == "file":
            target = Path(parse_uri(uri).path)
            target.mkdir(parents=True, exist_ok=True)
        open_store(uri, ArtifactSettings.from_env()).upload_dir(out, uri)
    logger.info("wrote the output model (%s) to %s", relation, uri)
    return uri
