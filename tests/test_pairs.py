"""Pair construction: prompt, parser, the three judges, no leakage, resumable output."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from sicsrec.content.judges import (
    NONE_ANSWER,
    EmbeddingJudge,
    HFJudge,
    OpenAIJudge,
    Request,
    build_prompt,
    parse_answer,
)
from sicsrec.content.pairs import build_requests, construct_pairs
from sicsrec.data.prepare import prepare
from sicsrec.errors import ConfigError

LINES = ["v12-Spicy noodles review", "v7-Cake, with cream", "v3-3 ways to cook", 'v5-"Quoted" title "here"']


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("v7-Cake, with cream", ("chosen", 1)),
        ("  v3-3 ways to cook \n", ("chosen", 2)),
        ("`v12-Spicy noodles review`", ("chosen", 0)),
        ("v12-Spicy noodles review.", ("chosen", 0)),
        ("-1", ("none", None)),
        ('v5-"Quoted" title "here"', ("chosen", 3)),
        ("v99-Some other video", ("outside", None)),
        ("v7-Cake with cream", ("invalid", None)),  # right id, wrong title
        ("The most similar is v7-Cake, with cream", ("invalid", None)),
        ("", ("invalid", None)),
        ("I think none of them.", ("invalid", None)),
        (None, ("failed", None)),
    ],
)
def test_parser(answer, expected):
    assert parse_answer(answer, LINES) == expected


def test_prompt_has_instruction_input_and_output_guidance():
    prompt = build_prompt("Target title", LINES)
    assert "most similar" in prompt and "Target video: Target title" in prompt
    assert all(line in prompt.splitlines() for line in LINES)
    assert "-1" in prompt and "ID-title" in prompt


def test_validation_and_test_items_never_reach_a_prompt(generated):
    data = prepare(generated)
    requests, _ = build_requests(data, "en", max_candidates=5)
    assert requests
    by_user = {data.user_ids[u]: data.sequence(u) for u in range(data.num_users)}
    for r in requests:
        seq = by_user[r.user]
        train = list(seq[:-2])
        assert r.target == train[-1]
        assert set(r.candidates) <= set(train[:-1]) and len(r.candidates) <= 5
        held_out = {int(seq[-1]), int(seq[-2])} - set(train)
        prompt_ids = {line.split("-", 1)[0] for line in r.candidate_lines}
        assert not prompt_ids & {data.item_ids[i - 1] for i in held_out}
        assert r.target not in held_out


def tiny_causal_lm(tmp_path):
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from sicsrec.content.encoders import resolve_text_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model("minilm"))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=tokenizer.vocab_size,
            n_positions=1024,
            n_embd=32,
            n_layer=2,
            n_head=2,
            eos_token_id=tokenizer.sep_token_id,
        )
    )
    path = tmp_path / "tiny-lm"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_hf_judge_with_constrained_decoding_always_answers_inside_the_candidates(generated, tmp_path):
    data = prepare(generated)
    requests, _ = build_requests(data, "en", max_candidates=6)
    requests = requests[:12]
    judge = HFJudge(tiny_causal_lm(tmp_path), constrained=True, batch_size=4)
    answers = judge(requests)
    statuses = [parse_answer(a, r.candidate_lines)[0] for a, r in zip(answers, requests)]
    assert all(s in ("chosen", "none") for s in statuses), statuses
    free = HFJudge(tiny_causal_lm(tmp_path), constrained=False, batch_size=4, max_new_tokens=8)(requests[:4])
    assert any(parse_answer(a, r.candidate_lines)[0] == "invalid" for a, r in zip(free, requests))


class ChatServer:
    """A loopback server speaking the chat-completions protocol, with scripted failures."""

    def __init__(self, script):
        self.script, self.calls = list(script), 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.calls += 1
                action = server.script.pop(0) if server.script else "echo"
                if action == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                if action == "sleep":
                    time.sleep(1.0)
                if action == "garbage":
                    payload = b"not json at all"
                else:
                    prompt = body["messages"][0]["content"]
                    first = prompt.split("Candidates:\n")[1].splitlines()[0]
                    payload = json.dumps({"choices": [{"message": {"content": first}}]}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # after "sleep" the client has timed out and gone: nothing to answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def request():
    return Request("u", 1, [2, 3], "t", LINES[:2])


def test_openai_judge_retries_5xx_and_timeouts_then_answers():
    server = ChatServer(["500", "sleep"])
    try:
        judge = OpenAIJudge(server.url, "m", api_key_env=None, retries=3, timeout=0.5, backoff=0.01, concurrency=1)
        assert judge([request()]) == [LINES[0]]
        assert server.calls == 3
    finally:
        server.close()


def test_openai_judge_counts_failures_and_garbage():
    server = ChatServer(["500", "500", "garbage"])
    try:
        judge = OpenAIJudge(server.url, "m", api_key_env=None, retries=1, timeout=2, backoff=0.01, concurrency=1)
        assert judge([request()]) == [None]  # two 500s: out of retries → failed
        assert judge([request()]) == [None]  # a reply that is not JSON → failed, not guessed
        assert judge([request()]) == [LINES[0]]
    finally:
        server.close()


class CountingJudge(EmbeddingJudge):
    def __init__(self):
        super().__init__(min_similarity=-1.0)
        self.seen = []

    def __call__(self, requests):
        self.seen += [r.user for r in requests]
        return super().__call__(requests)


def test_pairs_resume_after_a_kill_without_judging_anyone_twice(generated, tmp_path):
    data = prepare(generated)
    out = tmp_path / "pairs"
    full = construct_pairs(data, CountingJudge(), tmp_path / "reference", chunk=50, progress=False)

    judge = CountingJudge()
    construct_pairs(data, judge, out, chunk=50, progress=False)
    log = out / "judgements.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:100]) + lines[100][:17])  # killed mid-line after 100 judgements
    again = CountingJudge()
    report = construct_pairs(data, again, out, chunk=50, progress=False)
    assert len(again.seen) == full["asked"] - 100 and len(set(again.seen)) == len(again.seen)
    assert report["asked"] == full["asked"] and report["chosen"] == full["chosen"]
    assert (out / "pairs.jsonl").read_text() == (tmp_path / "reference" / "pairs.jsonl").read_text()
    finished = CountingJudge()
    construct_pairs(data, finished, out, progress=False)
    assert finished.seen == []  # a finished run costs nothing


def test_pairs_refuse_to_mix_judgements_from_another_setting(generated, tmp_path):
    data = prepare(generated)
    construct_pairs(data, CountingJudge(), tmp_path / "p", max_candidates=5, progress=False)
    with pytest.raises(ConfigError, match="another dataset, judge or setting"):
        construct_pairs(data, CountingJudge(), tmp_path / "p", max_candidates=7, progress=False)


def test_embedding_judge_answers_minus_one_below_the_threshold(generated):
    data = prepare(generated)
    requests, _ = build_requests(data, "en", 5)
    strict = EmbeddingJudge(min_similarity=1.01)
    strict.setup(data.titles["en"])
    assert set(strict(requests[:20])) == {NONE_ANSWER}
