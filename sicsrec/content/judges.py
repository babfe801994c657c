"""Judges for LLM-driven pair construction: which earlier item is semantically closest to the
target? The answer is exactly ``ID-title`` for one candidate, or ``-1`` for none.

Three judges share one prompt and one parser:

* :class:`EmbeddingJudge` — offline default: the candidate whose title embedding is most
  similar, ``-1`` below ``min_similarity``;
* :class:`HFJudge` — a local causal LM through transformers, greedy, batched, chat template
  when the tokenizer has one, and constrained decoding so only a valid answer can come out;
* :class:`OpenAIJudge` — any OpenAI-compatible chat endpoint (vLLM, Ollama, hosted), with
  concurrency, retries with backoff and timeouts.

A judge returns raw answers (``None`` when the call failed); :func:`parse_answer` decides.
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from sicsrec.content.encoders import MINILM, TextEncoder, resolve_text_model
from sicsrec.errors import ConfigError

log = logging.getLogger(__name__)

INSTRUCTION = (
    "You judge which video is most similar in content to a target video. You are given the "
    "target video's title and a list of candidate videos the same user watched before it, one per "
    "line as ID-title."
)
GUIDANCE = (
    "Answer with exactly one line copied from the candidate list, in the form ID-title, for the "
    "candidate most similar to the target. If none is similar, answer exactly -1. Any other answer "
    "is invalid."
)
NONE_ANSWER = "-1"


@dataclass
class Request:
    """One user's question: the target (its training part's last item) and earlier candidates."""

    user: str
    target: int  # internal ids
    candidates: list[int]
    target_title: str
    candidate_lines: list[str]  # "ID-title", ID the item's original id

    @property
    def prompt(self) -> str:
        return build_prompt(self.target_title, self.candidate_lines)


def build_prompt(target_title: str, candidate_lines: list[str]) -> str:
    return (
        f"{INSTRUCTION}\n\nTarget video: {target_title}\nCandidates:\n" + "\n".join(candidate_lines) + f"\n\n{GUIDANCE}"
    )


def parse_answer(answer: str | None, candidate_lines: list[str]) -> tuple[str, int | None]:
    """(status, index into ``candidate_lines``). Status is one of ``chosen``, ``none``,
    ``invalid`` (not of the form), ``outside`` (an ID that is not a candidate), ``failed``."""
    if answer is None:
        return "failed", None
    text = answer.strip()
    if text not in candidate_lines:  # tolerate wrapping quotes/backticks and a final full stop
        text = text.strip("`\"'").strip()
        if text.endswith(".") and text[:-1] in candidate_lines:
            text = text[:-1]
    if text == NONE_ANSWER:
        return "none", None
    if text in candidate_lines:
        return "chosen", candidate_lines.index(text)
    ids = {line.split("-", 1)[0] for line in candidate_lines}
    head, dash, _ = text.partition("-")
    if dash and head and " " not in head and "\n" not in text:
        return ("invalid" if head in ids else "outside"), None  # right id with a wrong title is invalid
    return "invalid", None


class Judge:
    def setup(self, titles: list[str]) -> None:
        """Called once with the item titles (index = internal id - 1) before judging."""

    def describe(self) -> dict:
        return {"judge": type(self).__name__}

    def __call__(self, requests: list[Request]) -> list[str | None]:
        raise NotImplementedError


class EmbeddingJudge(Judge):
    """The most similar candidate by text embedding (cosine), or ``-1`` below ``min_similarity``.

    Args:
        text: text encoder (default: bundled all-MiniLM-L6-v2, mean pooling).
        min_similarity: cosine similarity below which the answer is ``-1``.
        batch_size: titles per encoder batch.
    """

    def __init__(self, text: TextEncoder | None = None, min_similarity: float = 0.3, batch_size: int = 256):
        self.text = text or TextEncoder(MINILM)
        self.min_similarity, self.batch_size = min_similarity, batch_size

    def describe(self) -> dict:
        return {"judge": "embedding", "encoder": self.text.identity(), "min_similarity": self.min_similarity}

    @torch.inference_mode()
    def setup(self, titles: list[str]) -> None:
        self.text.eval()
        chunks = [
            self.text(**self.text.tokenize(titles[i : i + self.batch_size]))
            for i in range(0, len(titles), self.batch_size)
        ]
        emb = torch.nn.functional.normalize(torch.cat(chunks), dim=-1).numpy()
        self.embeddings = np.concatenate([np.zeros((1, emb.shape[1]), np.float32), emb])

    def __call__(self, requests: list[Request]) -> list[str | None]:
        answers = []
        for r in requests:
            sims = self.embeddings[r.candidates] @ self.embeddings[r.target]
            best = int(np.argmax(sims))
            answers.append(r.candidate_lines[best] if sims[best] >= self.min_similarity else NONE_ANSWER)
        return answers


class HFJudge(Judge):
    """A local causal LM (transformers), greedy, batched.

    Args:
        model: local folder or hub name of a causal LM (with its tokenizer).
        constrained: decode only token sequences that spell a candidate line or ``-1``
            (every answer then parses and lies inside the candidates).
        batch_size: prompts per generate call.
        max_new_tokens: generation limit when unconstrained.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda`` …
    """

    def __init__(
        self,
        model: str,
        constrained: bool = True,
        batch_size: int = 8,
        max_new_tokens: int = 64,
        dtype: str = "float32",
        device: str = "cpu",
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_text_model(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()
        except OSError as err:
            raise ConfigError(f"cannot load causal LM {model!r}: {err}") from None
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.eos = (
            self.tokenizer.eos_token_id
            if self.tokenizer.eos_token_id is not None
            else self.tokenizer.sep_token_id
            if self.tokenizer.sep_token_id is not None
            else self.tokenizer.pad_token_id
        )
        self.name, self.constrained, self.batch_size = model, constrained, batch_size
        self.max_new_tokens, self.device = max_new_tokens, device

    def describe(self) -> dict:
        return {"judge": "hf", "model": self.name, "constrained": self.constrained}

    def _text(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt + "\nAnswer: "

    def _encode(self, answer: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(answer, add_special_tokens=False)["input_ids"]) + (self.eos,)

    @torch.inference_mode()
    def __call__(self, requests: list[Request]) -> list[str | None]:
        answers: list[str | None] = []
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start : start + self.batch_size]
            batch = self.tokenizer(
                [self._text(r.prompt) for r in chunk], return_tensors="pt", padding=True, add_special_tokens=False
            ).to(self.device)
            prompt_len = batch["input_ids"].shape[1]
            kwargs = dict(do_sample=False, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.eos)
            if self.constrained:
                options = [{self._encode(a): a for a in r.candidate_lines + [NONE_ANSWER]} for r in chunk]

                def allowed(row: int, ids: torch.Tensor, prompt_len=prompt_len, options=options) -> list[int]:
                    done = tuple(ids[prompt_len:].tolist())
                    if done and done[-1] == self.eos and done in options[row]:
                        return [self.eos]  # finished: keep padding with EOS
                    nxt = {seq[len(done)] for seq in options[row] if len(seq) > len(done) and seq[: len(done)] == done}
                    return sorted(nxt) or [self.eos]

                kwargs.update(
                    prefix_allowed_tokens_fn=allowed, max_new_tokens=max(len(s) for opts in options for s in opts)
                )
            else:
                kwargs.update(max_new_tokens=self.max_new_tokens)
            out = self.model.generate(**batch, **kwargs)[:, prompt_len:]
            for row, tokens in enumerate(out.tolist()):
                if self.constrained:
                    end = tokens.index(self.eos) + 1 if self.eos in tokens else len(tokens)
                    answers.append(options[row].get(tuple(tokens[:end])))
                else:
                    answers.append(self.tokenizer.decode(tokens, skip_special_tokens=True))
        return answers


class OpenAIJudge(Judge):
    """Any OpenAI-compatible ``/chat/completions`` endpoint (vLLM, Ollama, a hosted API).

    Args:
        base_url: e.g. ``http://localhost:8000/v1`` (vLLM) or ``http://localhost:11434/v1`` (Ollama).
        model: model name the server knows.
        api_key_env: environment variable holding the key (unset: no Authorization header).
        concurrency: requests in flight.
        retries: extra attempts after a timeout, connection error, 429 or 5xx.
        timeout: seconds per request.
        backoff: seconds before the first retry, doubled each time.
        max_tokens: answer length limit.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        retries: int = 3,
        timeout: float = 60.0,
        backoff: float = 1.0,
        max_tokens: int = 64,
    ):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key_env, self.concurrency = model, api_key_env, concurrency
        self.retries, self.timeout, self.backoff, self.max_tokens = retries, timeout, backoff, max_tokens

    def describe(self) -> dict:
        return {"judge": "openai", "url": self.url, "model": self.model}

    def _ask(self, prompt: str) -> str | None:
        body = json.dumps(
            {
                "model": self.model,
                "temperature": 0,
                "max_tokens": self.max_tokens,
                "messages": [{"role": "user", "content": prompt}],
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    reply = json.loads(resp.read().decode("utf-8"))
                return reply["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as err:
                if err.code != 429 and err.code < 500:
                    log.warning("judge request refused (%s): not retried", err.code)
                    return None
                reason = f"HTTP {err.code}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
                reason = str(err)
            except (KeyError, IndexError, TypeError, ValueError) as err:
                log.warning("judge reply malformed (%s)", err)
                return None
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        log.warning("judge request failed after %d attempts (%s)", self.retries + 1, reason)
        return None

    def __call__(self, requests: list[Request]) -> list[str | None]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._ask, [r.prompt for r in requests]))
