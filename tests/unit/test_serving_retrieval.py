"""Two-stage top-K (recsys.serving.retrieval): exact where it must be (ALS, GMF, explicit candidates, every item
retrieved), filters exact whatever the candidate count, NeuMF's approximate first stage finds the exhaustive top 10,
and the settings refuse bad values at start-up."""

import numpy as np
import pytest
import torch

from helpers.serving import random_model
from recsys.artifact import LoadedModel
from recsys.models.als.model import ALSRecommender
from recsys.models.ncf.model import NCFRecommender
from recsys.models.ncf.retrieval import mean_slope
from recsys.platform.errors import UserError
from recsys.serving.predict import Predictor
from recsys.serving.ranking import Filters, Ranker
from recsys.serving.retrieval import RetrievalConfig, choose, principal_projection
from recsys.serving.schema import Options, TopK
from recsys.serving.settings import Settings
from recsys.training.hyperparameters import parse

N_USERS, N_ITEMS = 60, 500
EXHAUSTIVE = RetrievalConfig("exhaustive")


def ncf_model(model_type: str = "neumf", num_layers: int = 2, seed: int = 0) -> LoadedModel:
    """A random NCF whose scores vary (embeddings N(0, 1), not the training init's N(0, 0.01)), in the small
    model's ids and seen items."""
    torch.manual_seed(seed)
    hp = parse({"algorithm": "ncf", "model_type": model_type, "factor_num": "8", "num_layers": str(num_layers)})
    rec = NCFRecommender(hp, N_USERS, N_ITEMS, device="cpu")
    with torch.no_grad():
        for name, param in rec.net.named_parameters():
            if name.startswith("embed"):
                param.normal_(0, 1)
    base = random_model(N_USERS, N_ITEMS, seed=seed)
    return LoadedModel(
        {"algorithm": "ncf"}, rec, base.users, base.items, base.seen_indptr, base.seen_indices, base.popularity
    )


def two_stage(model, candidates, dims=16):
    return Ranker(model, retrieval=RetrievalConfig("two-stage", candidates, dims=dims))


def same(a, b):
    assert [r.items.tolist() for r in a] == [r.items.tolist() for r in b]
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-5, atol=1e-5)


FILTERS = [
    Filters(),
    Filters(exclude_seen=False),
    Filters(exclude=np.arange(0, N_ITEMS, 3), exclude_popular=20),
    Filters(include=np.array([1, 2, 7, 7]), exclude=np.array([2]), exclude_popular=30),
]


@pytest.mark.parametrize("filters", FILTERS)
def test_retrieving_every_item_gives_the_exhaustive_answer(filters):
    model = ncf_model()
    users = np.arange(N_USERS)
    same(
        two_stage(model, N_ITEMS).top_k(users, 10, filters),
        Ranker(model, retrieval=EXHAUSTIVE).top_k(users, 10, filters),
    )


@pytest.mark.parametrize("filters", FILTERS)
def test_filters_hold_exactly_with_few_candidates(filters):
    model = ncf_model()
    ranker = two_stage(model, 12)
    exhaustive = Ranker(model, retrieval=EXHAUSTIVE)
    users = np.arange(N_USERS)
    for user, got, want in zip(users, ranker.top_k(users, 10, filters), exhaustive.top_k(users, 10, filters)):
        allowed = {int(i) for i in exhaustive.top_k(np.array([user]), N_ITEMS, filters)[0].items}
        assert len(got.items) == len(want.items) == 10 and len(set(got.items.tolist())) == 10
        assert set(got.items.tolist()) <= allowed  # nothing excluded, seen (unless included) or popular
        assert np.all(np.diff(got.scores) <= 0)
        exact = model.recommender.score(np.array([user]), got.items[None, :])[0]
        np.testing.assert_allclose(got.scores, exact, rtol=1e-5, atol=1e-5)  # the model's own scores
    if filters.include is not None:  # an allowed included item is always scored exactly: found when it is the best
        best = ranker.top_k(users, 1, filters)
        assert all(r.items[0] in exhaustive.top_k(np.array([u]), 1, filters)[0].items for u, r in zip(users, best))


def test_fewer_allowed_items_than_candidates_or_k():
    model = ncf_model()
    allowed = np.array([4, 9, 30])
    filters = Filters(exclude=np.setdiff1d(np.arange(N_ITEMS), allowed), exclude_seen=False)
    (ranked,) = two_stage(model, 50).top_k(np.array([3]), 10, filters)
    assert sorted(ranked.items.tolist()) == allowed.tolist()


def test_explicit_candidates_are_scored_exactly_without_retrieval():
    model = ncf_model()
    users = np.arange(N_USERS)
    filters = Filters(candidates=np.arange(100, 400, 2), include=np.array([5]))
    same(two_stage(model, 1).top_k(users, 10, filters), Ranker(model, retrieval=EXHAUSTIVE).top_k(users, 10, filters))


def test_neumf_first_stage_finds_the_exhaustive_top_10():
    """Recall@10 against exhaustive scoring with 10% of the items retrieved: the averaged-slope MLP surrogate (and
    how much it adds over the GMF branch alone, which ignores the MLP)."""
    model = ncf_model(num_layers=1)
    users = np.arange(N_USERS)
    want = Ranker(model, retrieval=EXHAUSTIVE).top_k(users, 10)
    got = two_stage(model, 50).top_k(users, 10)
    recall = np.mean([len(set(a.items.tolist()) & set(b.items.tolist())) / 10 for a, b in zip(got, want)])
    assert recall >= 0.9
    ranker = two_stage(model, 50)
    queries = ranker.two_stage.queries
    mlp_width = ranker.two_stage.rotation.shape[0] - 8  # the GMF branch's 8 factors come first

    def gmf_only(u):
        return np.concatenate([queries(u)[:, :8], np.zeros((len(u), mlp_width), np.float32)], axis=1)

    ranker.two_stage.queries = gmf_only
    baseline = np.mean(
        [len(set(a.items.tolist()) & set(b.items.tolist())) / 10 for a, b in zip(ranker.top_k(users, 10), want)]
    )
    assert recall > baseline


def test_a_truncated_first_stage_still_filters_exactly_and_every_item_retrieved_is_exact():
    model = ncf_model()  # 8 GMF + 8 MLP dims
    users = np.arange(N_USERS)
    filters = FILTERS[3]
    ranker = two_stage(model, N_ITEMS, dims=3)
    assert ranker.two_stage.coarse.shape == (N_ITEMS, 3)
    same(ranker.top_k(users, 10, filters), Ranker(model, retrieval=EXHAUSTIVE).top_k(users, 10, filters))


def test_principal_projection_keeps_inner_products_with_every_dimension():
    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(300, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    rotation, coarse = principal_projection(items, 6, rows=7)  # blocks of 7 rows
    np.testing.assert_allclose((queries @ rotation) @ coarse.T, queries @ items.T, rtol=1e-4, atol=1e-4)
    _, top2 = principal_projection(items, 2)
    variance = (items @ np.linalg.eigh(items.T @ items)[1]).var(axis=0)
    assert top2.var(axis=0).sum() == pytest.approx(np.sort(variance)[-2:].sum(), rel=1e-3)


def test_mean_slope_is_the_averaged_gradient_of_the_tower():
    model = ncf_model(num_layers=3)
    scorer = model.recommender._fast()
    users, sample = scorer.user_proj[:5], scorer.item_proj[:40]
    with torch.inference_mode():
        slope = mean_slope(scorer, users, sample)
    hidden = (users[:, None, :] + sample[None, :, :]).clone().requires_grad_(True)
    x = torch.relu(hidden)
    for weight, bias in scorer.rest:
        x = torch.relu(x @ weight + bias)
    (grad,) = torch.autograd.grad((x @ scorer.w_mlp).sum(), hidden)
    torch.testing.assert_close(slope, grad.mean(dim=1), rtol=1e-5, atol=1e-6)


def test_als_and_gmf_spaces_are_exact_so_one_stage_serves_them():
    rng = np.random.default_rng(0)
    hp = parse({"algorithm": "als"})
    als = ALSRecommender(hp, N_USERS, N_ITEMS, rng.normal(size=(N_USERS, 5)), rng.normal(size=(N_ITEMS, 5)))
    gmf = ncf_model("gmf").recommender
    users = np.arange(N_USERS)
    for rec in (als, gmf):
        space = rec.retrieval_space()
        assert space.exact
        inner = space.queries(users) @ space.items.T
        scores = rec.score_all(users)
        np.testing.assert_allclose(inner - inner[:, :1], scores - scores[:, :1], rtol=1e-4, atol=1e-4)
        ranker, reason = choose(rec, N_ITEMS, RetrievalConfig("two-stage", 5))
        assert ranker is None and "exact" in reason


def test_auto_chooses_by_catalog_size_and_small_catalogs_stay_exhaustive():
    rec = ncf_model().recommender
    assert choose(rec, N_ITEMS, RetrievalConfig("auto", 10, N_ITEMS + 1))[0] is None
    assert choose(rec, N_ITEMS, RetrievalConfig("auto", 10, N_ITEMS))[0] is not None
    assert choose(rec, N_ITEMS, RetrievalConfig("exhaustive", 10, 1))[0] is None
    assert Ranker(ncf_model()).two_stage is None  # defaults: 500 items < 100,000
    assert choose(random_model().recommender, 200, RetrievalConfig("two-stage"))[0] is None  # no retrieval vectors


def test_predictor_answers_through_two_stages_with_raw_ids():
    model = ncf_model()
    user = model.users.ids[3]
    seen = model.items.ids[model.seen_items(3)].tolist()
    query = TopK([user, "nobody"], 10, True, Options(exclude=tuple(model.items.ids[:50].tolist())))
    answers = {
        mode: Predictor(model, retrieval=RetrievalConfig(mode, N_ITEMS)).predict([query])[0]
        for mode in ("exhaustive", "two-stage")
    }
    # the same answer; scores agree to float32 rounding (one user's exhaustive scores take numpy's path)
    for exhaustive, two_stage in zip(answers["exhaustive"], answers["two-stage"], strict=True):
        assert exhaustive["items"] == two_stage["items"]
        np.testing.assert_allclose(exhaustive["scores"], two_stage["scores"], rtol=1e-5, atol=2e-6)
        assert {k: v for k, v in exhaustive.items() if k != "scores"} == {
            k: v for k, v in two_stage.items() if k != "scores"
        }
    first = answers["two-stage"][0]["items"]
    assert len(first) == 10 and not set(first) & (set(seen) | set(model.items.ids[:50].tolist()))
    assert answers["two-stage"][1]["cold_start"] is True


@pytest.mark.parametrize(
    "name, value, wanted",
    [
        ("RECSYS_RETRIEVAL", "ann", "one of auto, exhaustive, two-stage"),
        ("RECSYS_RETRIEVAL_CANDIDATES", "0", "an integer between 1 and 1000000"),
        ("RECSYS_RETRIEVAL_MIN_ITEMS", "many", "an integer ≥ 1"),
        ("RECSYS_RETRIEVAL_DIMS", "0", "an integer between 1 and 4096"),
    ],
)
def test_a_bad_retrieval_setting_stops_start_up_naming_it(name, value, wanted):
    with pytest.raises(UserError, match=f"environment variable {name} must be {wanted}.*got"):
        Settings.from_env({name: value})
    assert Settings.from_env({"RECSYS_RETRIEVAL": "Two-Stage"}).retrieval == RetrievalConfig(
        "two-stage", 5000, 100_000, 16
    )
