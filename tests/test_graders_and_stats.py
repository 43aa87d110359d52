import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from evaluation.closed_book import grade
from evaluation.graders import OpenAIJudge, contains, exact_match, f1, normalize, recites_other
from core.stats import bootstrap_mean, paired_difference
from core.documents import passage_from_dict


def test_normalize_and_exact_match():
    assert normalize("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the Eiffel tower.", "Eiffel Tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0


def test_f1_known_values():
    assert f1("Bill Aken", "Bill Aken") == 1.0
    assert f1("Aken", "Bill Aken") == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert f1("nothing here", "Bill Aken") == 0.0


def test_containment_is_on_word_boundaries():
    assert contains("It was written by Bill Aken in the 1970s.", "Bill Aken") == 1.0
    assert contains("The year was 1940.", "4") == 0.0
    assert contains("It happened in 4 days", "4") == 1.0
    assert contains("anything", "") == 0.0


def test_recitation_control():
    others = ["Madera", "Bob Gallion", "Aken"]
    # contains another question's gold -> recitation
    assert recites_other("Bob Gallion recorded it", "Bill Aken", others) == 1.0
    # "Aken" overlaps the own gold "Bill Aken": not evidence of recitation
    assert recites_other("Bill Aken", "Bill Aken", others) == 0.0
    assert recites_other("no idea", "Bill Aken", others) == 0.0
    # echoing a name the question mentions is not recitation
    assert recites_other("Bob Gallion sang it", "Bill Aken", others, "Who wrote the song Bob Gallion sang?") == 0.0


class _JudgeHandler(BaseHTTPRequestHandler):
    replies = {}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        key = next((k for k in self.replies if k in prompt), None)
        status, text = self.replies.get(key, (200, "yes"))
        payload = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *a):
        pass


@pytest.fixture()
def judge_server():
    _JudgeHandler.replies = {"ANS-NO": (200, "No."), "ANS-ERR": (500, "boom"), "ANS-JUNK": (200, "maybe")}
    srv = HTTPServer(("127.0.0.1", 0), _JudgeHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_openai_judge_failures_are_ungraded_not_wrong(judge_server):
    j = OpenAIJudge(judge_server, "judge-model", timeout_s=5)
    assert j.grade("q", "gold", "ANS-YES") is True
    assert j.grade("q", "gold", "ANS-NO") is False
    assert j.grade("q", "gold", "ANS-ERR") is None
    assert j.grade("q", "gold", "ANS-JUNK") is None
    dead = OpenAIJudge("http://127.0.0.1:9/v1", "m", timeout_s=1)
    assert dead.grade("q", "g", "a") is None


def test_grade_records_judge_and_recitation(judge_server):
    p = passage_from_dict({"title": "t", "context": "c", "questions": [
        {"question": "q1", "answer": "Madera"}, {"question": "q2", "answer": "Bob Gallion"}]})
    rows = grade(p, ["Madera, I think", "ANS-ERR Madera"], OpenAIJudge(judge_server, "m", timeout_s=5))
    assert [r.contains for r in rows] == [1.0, 0.0]
    assert [r.recite for r in rows] == [0.0, 1.0]
    assert rows[0].judge is True and rows[1].judge is None and rows[1].judged


def test_bootstrap_mean_is_question_weighted_and_covers():
    per = [[1, 1, 1, 1], [0], [0, 0, 1, 1]]
    r = bootstrap_mean(per, n_boot=500, seed=1)
    assert r["mean"] == pytest.approx(6 / 9)
    assert r["lo"] <= r["mean"] <= r["hi"] and r["n_passages"] == 3 and r["n_questions"] == 9
    assert bootstrap_mean([[1, 1], [1]])["lo"] == 1.0


def test_paired_difference():
    a = [[1, 1], [1, 0], [0, 1]]
    b = [[0, 1], [0, 0], [0, 1]]
    d = paired_difference(a, b, n_boot=500)
    assert d["diff"] == pytest.approx(2 / 6)
    assert d["lo"] >= 0 and d["hi"] <= 1
    same = paired_difference(a, a)
    assert same["diff"] == 0 and same["lo"] == 0 and same["hi"] == 0


def test_rank_correlation_handles_ties_and_constants():
    from core.stats import pearson, ranks, spearman

    assert ranks([3.0, 1.0, 1.0, 2.0]) == [3.0, 0.5, 0.5, 2.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 400]) == pytest.approx(1.0)  # monotone, not linear
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3, 4], [10, 20, 30, 400]) < 0.9
    assert spearman([1, 1, 1], [1, 2, 3]) != spearman([1, 1, 1], [1, 2, 3])  # nan: one side constant
