"Tests of robustml.quiz: the SpotTheFake reader study, headless (no widget needed for the logic)."
import numpy as np
import pytest

from robustml.quiz import SpotTheFake
from robustml.stats import binomial_p, wilson_ci


@pytest.fixture
def quiz():
    rng = np.random.default_rng(0)
    return SpotTheFake(rng.random((30, 8, 8)), rng.random((30, 8, 8)), n=20, seed=3)


def test_draw_is_seeded_balanced_and_shuffled(quiz):
    assert len(quiz) == 20 and quiz.is_fake.sum() == 10
    rng = np.random.default_rng(0)
    again = SpotTheFake(rng.random((30, 8, 8)), rng.random((30, 8, 8)), n=20, seed=3)
    assert (again.is_fake == quiz.is_fake).all() and (again.source == quiz.source).all()
    other = SpotTheFake(rng.random((30, 8, 8)), rng.random((30, 8, 8)), n=20, seed=4)
    assert (other.is_fake != quiz.is_fake).any() or (other.source != quiz.source).any()
    assert not (quiz.is_fake[:10].all() or (~quiz.is_fake[:10]).all())  # shuffled, not fakes-last
    # no item drawn twice from the same set
    for f in (True, False): assert len(set(quiz.source[quiz.is_fake == f])) == (quiz.is_fake == f).sum()


def test_items_are_the_drawn_arrays():
    real = np.zeros((5, 4, 4)); fake = np.ones((5, 4, 4))
    q = SpotTheFake(real, fake, n=6, seed=0)
    for i in range(len(q)): assert (q[i] == float(q.is_fake[i])).all()


def test_score_for_scripted_answers(quiz):
    t = quiz.is_fake
    # reader: catches the first 7 fakes (in quiz order), misses 3; calls 2 reals fake; leaves the last item unanswered
    fake_idx, real_idx = np.flatnonzero(t), np.flatnonzero(~t)
    says = {int(i): True for i in fake_idx[:7]} | {int(i): False for i in fake_idx[7:]}
    says |= {int(i): True for i in real_idx[:2]} | {int(i): False for i in real_idx[2:]}
    skip = 19
    for i, s in says.items():
        if i != skip: quiz.answer(i, s, confidence=4)
    sc = quiz.score()
    answered = [i for i in range(20) if i != skip]
    k = sum(says[i] == bool(t[i]) for i in answered)
    nf = int(sum(t[i] for i in answered)); kf = sum(says[i] and t[i] for i in answered)
    assert sc['n_answered'] == 19 and sc['correct'] == k and sc['n_fake'] == nf and sc['fakes_identified_k'] == kf
    assert sc['accuracy'] == pytest.approx(100 * k / 19, abs=0.01)
    assert sc['fakes_identified'] == pytest.approx(100 * kf / nf, abs=0.01)
    assert sc['accuracy_ci'] == pytest.approx([100 * v for v in wilson_ci(k, 19)], abs=0.01)
    assert sc['p_guessing'] == pytest.approx(binomial_p(k, 19))
    assert 50 < sc['auc'] <= 100


def test_extreme_readers(quiz):
    for i in range(len(quiz)): quiz.answer(i, True)
    sc = quiz.score()
    assert sc['fakes_identified'] == 100 and sc['accuracy'] == 50 and sc['auc'] is None  # no confidences given
    for i in range(len(quiz)): quiz.answer(i, bool(quiz.is_fake[i]), 5)  # answers can be changed
    sc = quiz.score()
    assert sc['accuracy'] == 100 and sc['auc'] == 100 and sc['p_guessing'] < 1e-4


def test_unanswered_quiz_scores_none(quiz):
    sc = quiz.score()
    assert sc['n_answered'] == 0 and sc['accuracy'] is None and sc['p_guessing'] is None
    assert quiz.next_unanswered() == 0


def test_traces_work():
    rng = np.random.default_rng(1)
    q = SpotTheFake([rng.random(50) for _ in range(4)], rng.random((4, 1, 50)), n=4, seed=0)
    assert all(q[i].shape == (50,) for i in range(4))


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='needs'): SpotTheFake(rng.random((3, 4, 4)), rng.random((30, 4, 4)), n=20)
    with pytest.raises(ValueError, match='empty'): SpotTheFake([], rng.random((3, 4, 4)), n=2)
    with pytest.raises(ValueError, match='1-D trace or 2-D image'): SpotTheFake(rng.random((4, 2, 3, 3)), rng.random((4, 4, 4)), n=2)
    with pytest.raises(ValueError, match='n must'): SpotTheFake(rng.random((4, 4, 4)), rng.random((4, 4, 4)), n=0)
    q = SpotTheFake(rng.random((4, 4, 4)), rng.random((4, 4, 4)), n=4)
    with pytest.raises(IndexError): q.answer(4, True)
    with pytest.raises(ValueError, match='confidence'): q.answer(0, True, confidence=7)


def test_widget_builds():
    pytest.importorskip('ipywidgets')
    rng = np.random.default_rng(0)
    q = SpotTheFake(rng.random((4, 8, 8)), rng.random((4, 8, 8)), n=2)
    w = q.widget()
    assert w is not None


# ---------------------------------------------------------------- answers that are answers, items that do not give it away (issue 23)
from robustml.quiz import ItemIndexError


@pytest.mark.parametrize('real_shape,fake_shape', [((8, 8), (8, 9)), ((8, 8), (16, 16)), ((50,), (49,)), ((8, 8), (64,))])
def test_items_of_different_shapes_are_refused(real_shape, fake_shape):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match='one shape, or the shape gives the answer away') as e:
        SpotTheFake(rng.random((4, *real_shape)), rng.random((4, *fake_shape)), n=4)
    assert str(real_shape) in str(e.value) and str(fake_shape) in str(e.value)


def test_mixed_shapes_within_a_set_are_refused():
    rng = np.random.default_rng(0)
    real = [rng.random(50), rng.random(50), rng.random(60)]
    with pytest.raises(ValueError, match=r'real items have shape\(s\) \[\(50,\), \(60,\)\]'): SpotTheFake(real, rng.random((3, 50)), n=2)


def test_same_shape_after_squeezing_is_fine():
    rng = np.random.default_rng(0)
    q = SpotTheFake(rng.random((4, 1, 8, 8)), rng.random((4, 8, 8)), n=4)
    assert {q[i].shape for i in range(4)} == {(8, 8)}


@pytest.mark.parametrize('value', ['False', 'True', 'fake', 0, 1, 1.0, None, [True], np.int64(1)])
def test_answer_takes_only_booleans(quiz, value):
    with pytest.raises(ValueError, match=r'says_fake must be True \(generated\) or False \(real\), got'):
        quiz.answer(0, value)
    assert quiz.says_fake[0] == -1, "a refused answer must not be recorded"


def test_answer_accepts_python_and_numpy_booleans(quiz):
    quiz.answer(0, False); quiz.answer(1, True); quiz.answer(np.int64(2), np.bool_(True)); quiz.answer(3, np.bool_(False), confidence=np.int8(2))
    assert list(quiz.says_fake[:4]) == [0, 1, 1, 0] and quiz.confidence[3] == 2


def test_bad_indices(quiz):
    for i in (20, -1, 100):
        with pytest.raises(ItemIndexError, match=rf'item {i} is not in the quiz \(0\.\.19\)'): quiz.answer(i, True)
        with pytest.raises(ValueError): quiz[i]   # an ItemIndexError is both an IndexError and a ValueError
        with pytest.raises(IndexError): quiz[i]
    for i in (True, 1.0, '3', None):
        with pytest.raises(ValueError, match=r'i must be an integer item index 0\.\.19'): quiz.answer(i, True)
    with pytest.raises(ValueError, match='confidence'): quiz.answer(0, True, confidence=True)
    with pytest.raises(ValueError, match='n must'): SpotTheFake(np.zeros((4, 2, 2)), np.ones((4, 2, 2)), n=True)
    assert list(quiz) == quiz.items   # iteration still stops at the end


def test_static_view_report_sheet_and_key(quiz):
    "Before any answer the report says so in words (no dict of zeros and None); the key folds the truth in <details>."
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    text = quiz.report()
    assert text.startswith('No answers yet') and 'None' not in text and '20 items' in text
    key = quiz.answer_key(lambda i: f'item {i}')
    assert key.startswith('<details><summary>Answer key</summary>') and key.endswith('</details>')
    for i, f in enumerate(quiz.is_fake):
        assert f"{i + 1}. **{'generated' if f else 'real'}**: item {i}" in key
    fig = quiz.sheet(ncols=5)
    assert len([a for a in fig.axes if a.images]) == len(quiz) and fig.get_size_inches()[0] <= 7.5
    plt.close(fig)
    for i in range(len(quiz)): quiz.answer(i, True)   # calls everything fake: half right, every fake identified
    text = quiz.report()
    assert 'Accuracy 50.0%' in text and 'fakes identified 100.0%' in text and 'reals identified 0.0%' in text
