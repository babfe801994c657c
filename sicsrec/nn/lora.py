"""peft LoRA injection that refuses a target matching no layer.

peft drops a ``target_modules`` name that matches nothing as long as another name matches, so
renaming a layer (``dense_in``, say) would silently leave it without adapters.
"""

from __future__ import annotations

from torch import nn

from sicsrec.errors import ConfigError


def matches(module_name: str, target: str) -> bool:
    """peft's rule for a plain target name: the module's name is it, or ends in ``.<target>``."""
    return module_name == target or module_name.endswith("." + target)


def inject_lora(models: dict[str, nn.Module], targets: list[str], rank: int, alpha: int, dropout: float) -> None:
    """LoRA adapters in every layer of ``models`` that a target names. Every target must name a
    layer of at least one model, and every model must have a layer that a target names."""
    from peft import LoraConfig, inject_adapter_in_model

    names = {key: [name for name, _ in model.named_modules() if name] for key, model in models.items()}
    unmatched = [t for t in targets if not any(matches(n, t) for found in names.values() for n in found)]
    bare = [key for key, found in names.items() if not any(matches(n, t) for n in found for t in targets)]
    if unmatched or bare:
        what = (
            f"lora_targets {unmatched} match no layer of the {' or '.join(models)}"
            if unmatched
            else (f"lora_targets {list(targets)} match no layer of the {bare[0]}")
        )
        linears = sorted(
            {
                n.rsplit(".", 1)[-1]
                for model in models.values()
                for n, m in model.named_modules()
                if isinstance(m, nn.Linear)
            }
        )
        raise ConfigError(f"{what} (Linear layers there end in: {', '.join(linears[:12])}{' …' * (len(linears) > 12)})")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets))
    for model in models.values():
        inject_adapter_in_model(config, model)
