"""`emolab experiment=preview scenario=...`: what each agent is told, as its model will receive it, before any run.

For each agent, the first conversation it is given, built by the same functions the negotiation graph
calls (agents.negotiation.agent_turns, over the primaries of `probe.wheel`), after the model's chat template and with token counts (read
from the tokenizer alone: no weights are loaded), and the JSON schema its reply must fill. The
scenario is validated first, as a run validates it, so a bad field fails here in a second.
"""

from __future__ import annotations

import json
from typing import Any

from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict
from rich.console import Console
from rich.text import Text

from agents.negotiation import NegotiationScenario, agent_turns
from agents.records import CustomerTurnRecord, SalespersonTurnRecord
from emotion_probe.limits import InputLimits
from emotion_probe.models.base import ChatMessage
from emotion_probe.models.chat_template import load_chat_template
from emotion_probe.terminal import printable, printable_text
from emotion_probe.wheel import EmotionWheel
from experiments.app.common import validated
from experiments.runs.negotiation.run import read_scenario


class AgentPreview(BaseModel):
    """One agent's first prompt, as the run will send it."""

    model_config = ConfigDict(extra="forbid")

    role: str
    opens: bool
    #: The model config's display name (or its _target_).
    model: str
    #: The first conversation the agent is given. The agent that does not open first hears the other's
    #: opening message, which only the run knows: `placeholder` stands in for it.
    messages: list[ChatMessage]
    placeholder: str | None
    #: The messages after the model's chat template; None when no template applies here (a server applies
    #: its own to the messages it is sent; the scripted backend takes them as they are).
    prompt: str | None
    #: Where the tokenizer was read from.
    tokenizer: str | None
    #: Tokens of the whole prompt, of the system prompt and of the first user turn, alone; None without a tokenizer.
    tokens: dict[str, int] | None
    #: The schema the agent's reply must fill, as the run sends it (agents.structured.call_structured).
    schema_name: str
    json_schema: dict[str, Any]


def preview(cfg: DictConfig, scenario: NegotiationScenario | None = None) -> list[AgentPreview]:
    """Each agent's first prompt, the opening speaker first, for the scenario as the run plays it (read and
    validated from `cfg` unless given)."""
    if scenario is None:
        _, scenario = read_scenario(cfg, validated(InputLimits, cfg.limits, "limits"))
    opener = scenario.opening_speaker
    other = "customer" if opener == "salesperson" else "salesperson"
    turns_of = agent_turns(EmotionWheel.load(cfg.probe.wheel).primaries)  # the emotions a run reports over
    previews = []
    for role in (opener, other):
        node = cfg[role].model
        template = load_chat_template(node, where=f"{role}.model")
        placeholder = None if role == opener else f"<the {opener}'s opening message>"
        # The opener's message stands in for what it will say: a record built without validation, as only
        # its speaker and text reach the prompt.
        record = SalespersonTurnRecord if opener == "salesperson" else CustomerTurnRecord
        turns = [] if placeholder is None else [record.model_construct(speaker=opener, text=placeholder)]
        build, schema = turns_of[role]
        messages = build(scenario, turns)
        prompt = tokens = None
        if template is not None:
            prompt = template.render(messages)
            tokens = {"prompt": template.count(prompt), "system": template.count(messages[0].content),
                      "first_user_turn": template.count(messages[-1].content)}
        previews.append(AgentPreview(
            role=role, opens=role == opener, model=str(node.get("name") or node.get("_target_")), messages=messages,
            placeholder=placeholder, prompt=prompt, tokenizer=template.source if template else None, tokens=tokens,
            schema_name=schema.__name__, json_schema=schema.model_json_schema()))
    return previews


def _scenario_line(scenario: NegotiationScenario, persona: str) -> str:
    c = scenario.currency
    return (f"scenario {scenario.name}: {scenario.item}; seller_cost {c}{scenario.seller_cost:g}, customer_budget "
            f"{c}{scenario.customer_budget:g}, max_turns {scenario.max_turns}, {scenario.opening_speaker} opens; "
            f"customer persona {persona}")


def compact_json(value: Any, indent: int = 0, width: int = 100) -> str:
    """JSON with every object or list that fits in `width` on one line: a schema a person can read at a glance."""
    flat = json.dumps(value)
    if len(flat) + indent <= width or not isinstance(value, (dict, list)) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(key)}: {compact_json(item, indent + 2, width)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + compact_json(item, indent + 2, width) for item in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def show(previews: list[AgentPreview], console: Console) -> None:
    for agent in previews:
        # The model's name and its tokenizer's source come from config files: escaped, and shown as text.
        console.rule(printable_text(f"{agent.role}{' (opens)' if agent.opens else ''}: model {agent.model}"),
                     align="left")
        if agent.placeholder:
            console.print(Text(f"Its first user turn is the {previews[0].role}'s opening message, known only once "
                               f"the run starts; {agent.placeholder} stands in for it.", style="dim"))
        if agent.prompt is None:
            console.print(Text("No chat template is applied here (a server applies its own; the scripted backend "
                               "takes the messages as they are). The messages sent:", style="dim"))
            for message in agent.messages:
                console.print(Text(f"[{message.role}]", style="bold"), Text(printable(message.content, newlines=True)),
                              highlight=False)
        else:
            t = agent.tokens or {}
            template_tokens = t["prompt"] - t["system"] - t["first_user_turn"]
            console.print(printable_text(f"prompt after the chat template: {t['prompt']} tokens (system prompt "
                                         f"{t['system']}, first user turn {t['first_user_turn']}, template "
                                         f"{template_tokens}); tokenizer from {agent.tokenizer}", style="bold"))
            console.print(Text(printable(agent.prompt, newlines=True)), highlight=False, soft_wrap=True)
        console.print(Text(f"JSON schema of each reply ({agent.schema_name}):", style="bold"))
        console.print(Text(printable(compact_json(agent.json_schema), newlines=True)), highlight=False, soft_wrap=True)


def run(cfg: DictConfig) -> list[dict]:
    persona, scenario = read_scenario(cfg, validated(InputLimits, cfg.limits, "limits"))  # as the run plays it
    previews = preview(cfg, scenario)
    console = Console()
    console.print(Text(printable(_scenario_line(scenario, persona.name))), highlight=False, soft_wrap=True)
    show(previews, console)
    return [agent.model_dump() for agent in previews]
