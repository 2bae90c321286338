"""``llm`` nodes: OpenAI-compatible chat completions through a configured model alias.

``result`` is ``{text, json, model, usage, finish_reason}``; ``json`` is set when the node
declares ``output_schema`` (the answer must then be JSON matching it, else ``ValidationError``).
"""

from __future__ import annotations

import json
from typing import Any

from trellis._jsonschema import first_violation
from trellis.dsl.models import LlmNode
from trellis.errors import LlmError, ValidationError, WorkflowError
from trellis.expressions import compile_template
from trellis.nodes._context import NodeContext
from trellis.nodes._env import BuildEnv
from trellis.nodes._wrapper import Body, Outcome
from trellis.nodes.http import send


def build(node_id: str, node: LlmNode, env: BuildEnv) -> Body:
    prompt = compile_template(node.prompt)
    system = compile_template(node.system) if node.system else None

    async def body(ctx: NodeContext) -> Outcome:
        alias = env.model(node.model)
        messages = []
        if system is not None:
            messages.append({"role": "system", "content": system.render(ctx.bindings)})
        messages.append({"role": "user", "content": prompt.render(ctx.bindings)})
        payload: dict[str, Any] = {"model": alias.model, "messages": messages}
        if node.temperature is not None:
            payload["temperature"] = node.temperature
        if node.max_tokens is not None:
            payload["max_tokens"] = node.max_tokens
        if node.output_schema is not None:
            payload["response_format"] = {"type": "json_object"}
        headers = {}
        if (key := alias.api_key()) is not None:
            headers["Authorization"] = f"Bearer {key}"
        url = alias.base_url.rstrip("/") + "/chat/completions"
        what = f"llm node {ctx.node!r} (model alias {node.model!r})"
        try:
            response = await send(
                env,
                "POST",
                url,
                what=what,
                json=payload,
                headers=headers,
                timeout_seconds=alias.timeout_seconds,
            )
            answer = response.json()
            choice = answer["choices"][0]
            text = choice["message"]["content"] or ""
        except WorkflowError as exc:
            if exc.name == "HttpError":
                raise LlmError(exc.message, details=exc.details, retryable=exc.retryable) from exc
            raise
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LlmError(f"{what}: malformed chat completion ({type(exc).__name__}: {exc})") from exc
        if isinstance(answer.get("usage"), dict):
            ctx.record_usage(str(answer.get("model") or alias.model), answer["usage"])
        result: dict[str, Any] = {
            "text": text,
            "json": None,
            "model": answer.get("model", alias.model),
            "usage": answer.get("usage") or {},
            "finish_reason": choice.get("finish_reason"),
        }
        if node.output_schema is not None:
            result["json"] = _parse_structured(text, node.output_schema, what)
        return Outcome(result=result)

    return body


def _parse_structured(text: str, schema: dict[str, Any], what: str) -> Any:
    cleaned = text.strip()
    if cleaned.startswith("```"):
        cleaned = cleaned.strip("`").removeprefix("json").strip()
    try:
        value = json.loads(cleaned)
    except ValueError as exc:
        raise ValidationError(f"{what}: answer is not JSON: {exc}", details={"text": text[:500]}) from exc
    violation = first_violation(schema, value)
    if violation is not None:
        path, message = violation
        raise ValidationError(
            f"{what}: answer does not match output_schema at {path}: {message}", details={"path": path}
        )
    return value
