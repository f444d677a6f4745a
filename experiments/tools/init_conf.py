"""`emolab experiment=init_conf dir=my_conf`: a commented starter folder of your own configs, outside the package.

The folder is laid out like the package's conf/, so Hydra finds its files once it is on the config
search path, and they are used by name like the shipped ones:

    emolab experiment=negotiation 'hydra.searchpath=[file://my_conf]' scenario=my_deal

Hydra searches the package first, so a file named like a shipped one would never be picked: the
starter files have names the package does not use. Files already there are never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.text import Text

from emotion_probe.errors import ConfigError

#: Replaced by the search-path entry of the folder being written, so each file's examples run as printed.
_SEARCHPATH = "@SEARCHPATH@"

SCENARIO = """\
# A negotiation scenario of your own. From the folder you ran init_conf in:
#   emolab experiment=preview '@SEARCHPATH@' scenario=my_deal       # the prompts each agent gets, checked
#   emolab experiment=negotiation '@SEARCHPATH@' scenario=my_deal   # a run
# A run checks every key first (agents.negotiation.NegotiationScenario): an unknown key, a budget below the
# seller's cost or an unknown opening speaker stops it with one line that names the field.
# Scenario name in outputs (thread ids, summary.json, the sweep report's columns).
name: my_deal
# What is for sale; the salesperson is told "You are a salesperson selling <item>", so give it an article.
item: a second-hand road bike
# What the salesperson knows and may say about it.
description: It is a ten-year-old steel road bike with new tyres and brakes, and a scratch on the top tube.
# What the item cost the seller, in `currency`; the salesperson is told it.
seller_cost: 150
# Who the customer is: the customer is told "You are <customer_persona>". A customer persona with a
# description (customer/persona=my_customer) replaces it.
customer_persona: a student who needs a bike to get to lectures and has saved for months
# The most the customer can pay; at least seller_cost.
customer_budget: 400
# Customer replies before the talk ends without a deal (1 to 50).
max_turns: 4
# Who speaks first: salesperson or customer.
opening_speaker: salesperson
# Extra instructions, added to both agents' system prompts ("" for none).
extra_instructions: ""
# Currency symbol used in prompts.
currency: "$"
"""

CUSTOMER_PERSONA = """\
# @package customer.persona
# A customer persona of your own: its description replaces the scenario's customer_persona.
#   emolab experiment=preview '@SEARCHPATH@' scenario=my_deal customer/persona=my_customer
#   emolab -m experiment=negotiation '@SEARCHPATH@' scenario=my_deal customer/persona=my_customer,anxious
# Name of the persona in outputs.
name: my_customer
# Who the customer is, as the customer agent is told ("You are <description>"); null = the scenario's own.
description: "a cautious parent buying a first bike for a teenager, who asks a lot of questions"
"""

PERSONA = """\
# A persona of your own for persona-bias runs (the probe reads the scenario in this persona's voice):
#   emolab experiment=persona_bias '@SEARCHPATH@' persona=my_persona limit=135
# Name of the persona in outputs.
name: my_persona
# Completes "<scenario> As <phrase>, I think the emotion involved in this situation is"; null = no persona clause.
phrase: "a night-shift nurse"
"""

MODEL = """\
# A model config of your own: here, the package's embedded SmolLM2 (its model/smollm2.yaml) under a name of
# yours. To start from another backend, name it in the defaults list and set its keys, e.g.
#   defaults: [vllm, _self_]  with  model: meta-llama/Llama-3.1-8B-Instruct
# The probe uses it as model=my_model, the agents as salesperson/model=my_model and customer/model=my_model
# (the two small files under this folder's salesperson/ and customer/):
#   emolab experiment=negotiation '@SEARCHPATH@' scenario=my_deal salesperson/model=my_model
# Which shipped model config this one starts from; keys below override its keys.
defaults:
  - smollm2
  - _self_

# Display name in manifests, tables and the report.
name: my-smollm2
# grammar | prompt: how a reply that must follow a JSON schema (the agents' turns) is produced.
# grammar = decoded under the schema's token mask; prompt = the schema is left to the prompt, then validated.
structured_output: grammar
"""


def _agent_model(role: str) -> str:
    return (f"# @package {role}.model\n"
            f"# The {role} agent's backend: this folder's model/my_model.yaml "
            f"(override its keys as {role}.model.<key>=...).\n"
            "defaults:\n"
            "  - /model/my_model@_here_\n")


#: The starter files, by path inside the folder.
STARTER: dict[str, str] = {
    "scenario/my_deal.yaml": SCENARIO,
    "customer/persona/my_customer.yaml": CUSTOMER_PERSONA,
    "persona/my_persona.yaml": PERSONA,
    "model/my_model.yaml": MODEL,
    "salesperson/model/my_model.yaml": _agent_model("salesperson"),
    "customer/model/my_model.yaml": _agent_model("customer"),
}


def searchpath_override(folder: str) -> str:
    """The override that puts `folder` on Hydra's config search path, as the user types it.

    A relative folder stays relative (Hydra reads it from the directory emolab runs in).
    """
    return f"hydra.searchpath=[file://{folder}]"


def write_starter(folder: Path, shown_as: str | None = None) -> list[Path]:
    """Write the starter files under `folder`; refuse, before writing anything, if one is already there."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"dir: {folder} exists and is not a directory")
    targets = {folder / relative: text for relative, text in STARTER.items()}
    # A symlink inside the folder (even one that points nowhere yet) would carry a write outside it.
    for target in targets:
        path = folder
        for part in target.relative_to(folder).parts:
            path = path / part
            if path.is_symlink():
                raise ConfigError(f"dir: {path} is a symlink; init_conf writes only real files inside {folder}")
    taken = [path for path in targets if path.exists()]
    if taken:
        raise ConfigError(f"dir: {taken[0]} already exists; init_conf never overwrites a file "
                          "(choose another dir, or move the existing files away)")
    override = searchpath_override(shown_as or str(folder))
    for path, text in targets.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Exclusive create, no following: a file or link that appeared since the checks above is refused.
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise ConfigError(f"dir: {path} already exists; init_conf never overwrites a file") from None
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text.replace(_SEARCHPATH, override))
    return list(targets)


def run(cfg: DictConfig) -> list[str]:
    if OmegaConf.is_missing(cfg, "dir") or not str(cfg.dir).strip():
        raise ConfigError("dir: required, the folder to write, e.g. emolab experiment=init_conf dir=my_conf")
    raw = str(cfg.dir).rstrip("/") or "/"
    # Hydra does not expand "~" in a search path, and neither does a shell inside quotes: spell it out.
    shown_as = str(Path(raw).expanduser()) if raw.startswith("~") else raw
    written = write_starter(Path(shown_as), shown_as)
    console = Console()
    for path in written:
        console.print(Text(f"wrote {path}"), highlight=False)
    override = searchpath_override(shown_as)
    console.print(Text(
        f"\nEdit {shown_as}/scenario/my_deal.yaml, then, from this directory:\n"
        f"  emolab experiment=preview '{override}' scenario=my_deal\n"
        f"  emolab experiment=negotiation '{override}' scenario=my_deal customer/persona=my_customer\n"
        "  emolab experiment=watch run_dir=outputs/negotiation/<timestamp>"), highlight=False, soft_wrap=True)
    return [str(path) for path in written]
