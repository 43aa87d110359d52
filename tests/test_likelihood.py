"""The dense reward's measure: the likelihood of a reference answer, per token, closed book."""
import torch

from evaluation.closed_book import answer_likelihood, question_prompt
from core.documents import QA
from student.generation import render_prompt
from student.likelihood import answer_logprobs

QAS = [QA("Where does the Zorblax river flow?", "into the Quimby sea"), QA("Who painted the harbour?", "Anna Berg"),
       QA("What is the name of the enzyme that splits lactose in the small intestine?", "lactase")]


def test_batched_equals_one_at_a_time_and_matches_a_direct_computation(runtime):
    st = runtime.student
    pairs = [(render_prompt(st.tokenizer, q.question), q.answer) for q in QAS]
    with st.use(None) as m:
        batched = answer_logprobs(m, st.tokenizer, pairs, batch_size=3)
        single = [answer_logprobs(m, st.tokenizer, [pr], batch_size=1)[0] for pr in pairs]
        p = st.tokenizer(pairs[1][0], add_special_tokens=False)["input_ids"]
        c = st.tokenizer(pairs[1][1], add_special_tokens=False)["input_ids"] + [st.tokenizer.eos_token_id]
        with torch.inference_mode():
            logp = torch.log_softmax(m(input_ids=torch.tensor([p + c])).logits.float()[0], -1)
        direct = float(torch.stack([logp[len(p) - 1 + i, t] for i, t in enumerate(c)]).mean())
    torch.testing.assert_close(batched, single, atol=1e-4, rtol=0)
    assert abs(batched[1] - direct) < 1e-4
    assert all(x < 0 for x in batched)


def test_learning_the_answers_raises_their_likelihood_and_not_others(runtime):
    st = runtime.student
    taught = [(render_prompt(st.tokenizer, question_prompt(q.question)), q.answer) for q in QAS[:2]]
    before = answer_likelihood(st, None, QAS)
    st.train_adapter([], "knows-zorblax", seed=0, pairs=taught,
                     settings=st.settings.model_copy(update={"epochs": 20, "learning_rate": 1e-2}))
    after = answer_likelihood(st, "knows-zorblax", QAS)
    assert after[0] > before[0] + 0.5 and after[1] > before[1] + 0.5  # taught: much more likely
    assert after[2] - before[2] < min(after[0] - before[0], after[1] - before[1])  # the untaught one moves less
