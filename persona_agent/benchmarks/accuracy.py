"""PersonalRewardBench-style accuracy: per user, fit on train (+ val), judge the test pairs.

The protocol is `agent.evaluation`'s: every test pair is judged in both reply orders, each order
alone; each judge reports ``macro_accuracy`` (debiased: the two orders combined into one verdict,
as the product judges), ``macro_accuracy_per_order`` (each order a prediction of its own, ties
wrong: PersonalRewardBench's figure) and ``position_consistency``, macro over users with 95%
bootstrap intervals. Judges are compared on the same users: a user any judge failed for is
listed in ``excluded_users`` and left out of every judge's figures; ``compare`` adds the
difference of two judges with a paired bootstrap interval.

Splits (`agent.evaluation.user_splits`): a file's own ``split`` labels (MT-Bench) or a seeded
split of sibling groups (PRISM examples); siblings (same context and chosen reply) never straddle
splits. Users whose pairs are all ``population`` are not evaluated, and users with fewer than
2 train pairs or no test pair are skipped. The judges (`JUDGES`):

- ``default``: the LLM judge without persona.
- ``synthesizeme``: persona + the demos SynthesizeMe selected on val (one fit per user, shared
  by the next four judges).
- ``retrieved``: persona + demos retrieved per test conversation from a `PreferenceStore` over an
  in-memory Chroma holding the user's train pairs, annotated as the synthesis graph does
  (``default_judge_correct``, ``has_verified_reasoning``, the verified reasoning).
- ``persona``: persona only. ``demos``: the selected demos only.
- ``offline``: the reward model, population prior adapted on the user's train pairs (no LLM).
  The prior is the shipped one (fitted on MT-Bench), except for users it was fitted on: for a
  file of those (MT-Bench), each user's prior is refitted on every other user's ``population``
  and ``train`` pairs of the file, as ``scripts/eval_offline.py`` does. Each user is fitted with
  the taste prior the file's *other* users share (`agent.shared_tastes`, learnt from their train
  pairs), as a deployment does after ``persona-agent memory learn-tastes``; ``shared_tastes=False``
  (``--no-shared-tastes``) fits every user with the prior's own masses.
- ``hybrid``: the ``synthesizeme`` judge and the ``offline`` judge pooled in log-odds, the stack
  fitted on the user's val pairs when there are enough (`agent.offline_judge`).
- ``longer``: the rule "prefer the longer reply".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.language_models import BaseChatModel

from agent.evaluation import Evaluation, JudgeFactory, PairJudge, run_judges, same_judge
from agent.fit_stages import SynthesisResult
from agent.formats import split_of
from agent.judge import DefaultJudge, PairwiseJudge, PersonaJudge
from agent.records import PreferencePair
from agent.reference_search import ReferenceSearch
from agent.splits import UserSplit, demos_without, user_splits
from agent.synthesis import SynthesizeMe
from agent.usage import UsageTracker

if TYPE_CHECKING:
    from agent.features import FeatureExtractor
    from agent.offline_judge import HybridJudge, OfflineJudge
    from agent.reward_model import RewardModel
    from agent.shared_tastes import SharedTastes
    from graphs.chat import ChatOptions
    from memory.store import PreferenceStore
    from persona_agent.settings import Settings

logger = logging.getLogger(__name__)

JUDGES = ("default", "synthesizeme", "retrieved", "persona", "demos", "offline", "hybrid", "longer")
LLM_JUDGES = frozenset({"default", "synthesizeme", "retrieved", "persona", "demos", "hybrid"})
FIT_JUDGES = frozenset({"synthesizeme", "retrieved", "persona", "demos", "hybrid"})
Search = Literal["default", "full", "reference"]


# What sets each search apart from the product's fit: the fitter and its search arguments (None:
# the configured budget). ``full`` mimics the original method's search: every pair within 200 is
# read, up to 4 demos per set, 8 more candidate demo sets drawn at random from all bootstrapped
# demos, no call cap; ``reference`` is the reference library's search with its own defaults.
SEARCHES: dict[Search, tuple[type[SynthesizeMe], dict[str, Any] | None]] = {
    "default": (SynthesizeMe, None),
    "full": (SynthesizeMe, {"max_calls": 100_000, "max_pairs": 200, "max_demos": 4, "random_sets": 8}),
    "reference": (ReferenceSearch, {}),
}


def synthesizer_for(
    search: Search, model: BaseChatModel, judge_model: BaseChatModel, *, settings: Settings, seed: int
) -> SynthesizeMe:
    """Return the fitter: the product's budgeted search, the fuller search (``full``) or the
    reference library's search (``reference``, `agent.reference_search.ReferenceSearch`)."""
    from persona_agent.factory import build_synthesize_me

    kind, arguments = SEARCHES[search]
    return build_synthesize_me(settings, model, judge_model, seed=seed, kind=kind, search=arguments)


class OfflineModels:
    """The offline reward model's prior per user (leave-user-out when the file allows), the tastes
    the file's users share (`agent.shared_tastes`), and features."""

    def __init__(self, pairs: Sequence[PreferencePair], extractor: FeatureExtractor) -> None:
        self.pairs = list(pairs)
        self.extractor = extractor
        self.prior_source = ""
        self._priors: dict[str, RewardModel] = {}
        self._shared: RewardModel | None = None
        self._tastes: SharedTastes | None = None

    def prepare(self, splits: Sequence[UserSplit], *, shared_tastes: bool = True) -> None:
        """Fit the users' priors (or load the shipped one), then, with `shared_tastes`, learn the
        tastes the users share from their train pairs; embeds every reply of the file once."""
        from agent.evaluation import leave_user_out_priors
        from agent.reward_model import RewardModel
        from agent.shared_tastes import SharedTastes

        self.extractor.pair_differences(self.pairs)
        shipped = RewardModel.load()
        users = [split.user_id for split in splits]
        seen = sorted(set(users) & set(shipped.trained_on))
        if seen:
            # the shipped prior was fitted on these users' pairs: refit it without each of them
            self._priors = leave_user_out_priors(self.pairs, self.extractor, users, template=shipped)
            pool = [pair for pair in self.pairs if split_of(pair) in ("population", "train")]
            self.prior_source = (
                f"leave-user-out (the shipped prior has seen {len(seen)} of these users), "
                f"fitted on {len(pool)} population and train pairs"
            )
        else:
            self._shared = shipped
            self.prior_source = f"the shipped population prior ({shipped.description})"
        if shared_tastes:
            own = {split.user_id: split.train for split in splits}
            self._tastes = SharedTastes.learn(self.prior, self.extractor, own)
            self.prior_source += (
                f"; taste prior learnt from {self._tastes.n_users} users' train pairs, each user's own "
                f"left out (the prior's own masses counting as {self._tastes.default_weight})"
            )
        else:
            self.prior_source += "; the prior's own taste masses"

    def prior(self, user_id: str) -> RewardModel:
        """Return the prior `user_id` is fitted from."""
        prior = self._priors.get(user_id) or self._shared
        if prior is None:
            raise RuntimeError(f"no prior prepared for {user_id}")
        return prior

    def judge(self, split: UserSplit) -> OfflineJudge:
        """Return the user's offline judge, adapted on their train pairs."""
        from agent.offline_judge import OfflineJudge

        prior = self.prior(split.user_id)
        masses = self._tastes.masses_for(split.user_id, prior) if self._tastes is not None else None
        return OfflineJudge.for_user(prior, self.extractor, split.train, masses=masses)


class BenchJudges:
    """Build each judge per user; the SynthesizeMe fit and the offline model are shared per user."""

    def __init__(
        self,
        *,
        judge_model: BaseChatModel | None,
        fitter: SynthesizeMe | None,
        options: ChatOptions,
        offline: OfflineModels | None = None,
        store: PreferenceStore | None = None,
    ) -> None:
        self.judge_model = judge_model
        self.fitter = fitter
        self.options = options
        self.offline = offline
        self.store = store
        self.trackers: dict[str, UsageTracker] = defaultdict(UsageTracker)
        self.fits: dict[str, SynthesisResult] = {}
        self.fit_seconds: dict[str, float] = {}
        self._persona_judges: dict[str, PersonaJudge] = {}
        self._offline_judges: dict[str, OfflineJudge] = {}
        self._stored_users: set[str] = set()

    def builders(self, names: Sequence[str]) -> dict[str, JudgeFactory]:
        """Return the builders of the judges `names`, in that order."""
        table: dict[str, JudgeFactory] = {
            "default": self._default,
            "synthesizeme": self._synthesizeme,
            "retrieved": self._retrieved,
            "persona": self._persona,
            "demos": self._demos,
            "offline": self._offline,
            "hybrid": self._hybrid,
            "longer": self._longer,
        }
        unknown = [name for name in names if name not in table]
        if unknown:
            raise ValueError(f"unknown judges {unknown}; choose from {', '.join(JUDGES)}")
        return {name: table[name] for name in names}

    def _llm(self, name: str, persona: str | None, demos: Sequence[Any] = ()) -> PersonaJudge:
        if self.judge_model is None:
            raise RuntimeError(f"judge {name!r} needs a judge model")
        return PersonaJudge(
            self.judge_model,
            persona,
            demos,
            structured_method=self.options.structured_method,
            concurrency=self.options.concurrency,
            stage="test",
            callbacks=[self.trackers[name]],
        )

    async def fit(self, split: UserSplit) -> SynthesisResult:
        """Fit (once) the user's persona and demos on train and val."""
        if split.user_id not in self.fits:
            if self.fitter is None:
                raise RuntimeError("the SynthesizeMe judges need a fitter")
            started = time.perf_counter()
            self.fits[split.user_id] = await self.fitter.fit(split.train, split.val)
            self.fit_seconds[split.user_id] = time.perf_counter() - started
        return self.fits[split.user_id]

    async def _default(self, split: UserSplit) -> PairJudge:
        if self.judge_model is None:
            raise RuntimeError("judge 'default' needs a judge model")
        judge = DefaultJudge(
            self.judge_model,
            structured_method=self.options.structured_method,
            concurrency=self.options.concurrency,
            stage="test",
            callbacks=[self.trackers["default"]],
        )
        return same_judge(judge)

    async def _persona_judge(self, split: UserSplit) -> PersonaJudge:
        if split.user_id not in self._persona_judges:
            result = await self.fit(split)
            self._persona_judges[split.user_id] = self._llm("synthesizeme", result.persona.text, result.demos)
        return self._persona_judges[split.user_id]

    async def _synthesizeme(self, split: UserSplit) -> PairJudge:
        return same_judge(await self._persona_judge(split))

    async def _persona(self, split: UserSplit) -> PairJudge:
        result = await self.fit(split)
        return same_judge(self._llm("persona", result.persona.text))

    async def _demos(self, split: UserSplit) -> PairJudge:
        result = await self.fit(split)
        return same_judge(self._llm("demos", None, result.demos))

    async def _retrieved(self, split: UserSplit) -> PairJudge:
        result = await self.fit(split)
        store = self.store
        if store is None:
            raise RuntimeError("judge 'retrieved' needs a memory store")
        if split.user_id not in self._stored_users:
            await asyncio.to_thread(store.add_pairs, split.user_id, split.train)
            await asyncio.to_thread(store.annotate_pairs, split.user_id, result.pair_annotations())
            self._stored_users.add(split.user_id)
        options = self.options

        async def for_pair(pair: PreferencePair) -> PairwiseJudge:
            demos = await asyncio.to_thread(
                store.retrieve_demos,
                split.user_id,
                pair.context,
                options.demo_k,
                similarity_weight=options.similarity_weight,
                informativeness_weight=options.informativeness_weight,
                mmr_lambda=options.mmr_lambda,
            )
            return self._llm("retrieved", result.persona.text, demos_without(pair, demos))

        return for_pair

    def _offline_judge(self, split: UserSplit) -> OfflineJudge:
        if self.offline is None:
            raise RuntimeError("the offline judges need the offline models")
        if split.user_id not in self._offline_judges:
            self._offline_judges[split.user_id] = self.offline.judge(split)
        return self._offline_judges[split.user_id]

    async def _offline(self, split: UserSplit) -> PairJudge:
        return same_judge(await asyncio.to_thread(self._offline_judge, split))

    async def _hybrid(self, split: UserSplit) -> PairJudge:
        from agent.offline_judge import HybridJudge

        offline = await asyncio.to_thread(self._offline_judge, split)
        hybrid: HybridJudge = await HybridJudge.fit(await self._persona_judge(split), offline, split.val)
        return same_judge(hybrid)

    async def _longer(self, split: UserSplit) -> PairJudge:
        from agent.offline_judge import PreferLongerJudge

        return same_judge(PreferLongerJudge())


def new_store(embeddings: Any) -> PreferenceStore:
    """Return a fresh store over an in-memory Chroma for the retrieved-demos judge."""
    from memory.chroma import make_client
    from memory.store import PreferenceStore

    return PreferenceStore(make_client(ephemeral=True), embeddings, prefix=f"bench_{uuid.uuid4().hex[:12]}")


def user_rows(splits: Sequence[UserSplit], judges: BenchJudges) -> list[dict[str, Any]]:
    """Describe each evaluated user: split sizes and, when fitted, the fit's cost and outcome."""
    rows = []
    for split in splits:
        row: dict[str, Any] = {
            "user_id": split.user_id,
            "split": split.how,
            "n_train": len(split.train),
            "n_val": len(split.val),
            "n_test": len(split.test),
        }
        result = judges.fits.get(split.user_id)
        if result is not None:
            usage = result.usage.total
            row["fit"] = {
                "n_train_used": len(result.train_pair_ids),
                "n_val_used": len(result.val_pair_ids),
                "calls": usage.calls,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "seconds": round(judges.fit_seconds.get(split.user_id, 0.0), 2),
                "val_accuracy": result.persona.val_accuracy,
                "demos": len(result.demos),
                "verified_reasoning": sum(r.verified for r in result.reasoning),
                "candidate_sets": len(result.candidates),
                "persona": result.persona.text,
            }
        rows.append(row)
    return rows


def judge_document(evaluation: Evaluation, name: str, *, seed: int) -> dict[str, Any]:
    """Return one judge's figures over the users every judge judged, one row per user, and its skips."""
    report = evaluation.report(name, seed=seed)
    run = evaluation.runs[name]
    return {
        "macro_accuracy": report.macro_accuracy if report else None,
        "ci_low": report.ci_low if report else None,
        "ci_high": report.ci_high if report else None,
        "macro_accuracy_per_order": report.macro_accuracy_per_order if report else None,
        "ci_per_order": [report.ci_per_order_low, report.ci_per_order_high] if report else None,
        "position_consistency": report.position_consistency if report else None,
        "n_users": report.n_users if report else 0,
        "n_pairs": report.n_pairs if report else 0,
        "fallbacks": report.fallbacks if report else 0,
        "seconds": round(run.seconds, 2),
        "users": [
            {
                "user_id": user.user_id,
                "n_test": user.n_pairs,
                "accuracy": user.accuracy,
                "accuracy_per_order": user.accuracy_per_order,
                "position_consistency": user.position_consistency,
            }
            for user in (report.users if report else ())
        ],
        "skipped": [{"user_id": user, "reason": why} for user, why in run.skipped.items()],
    }


def comparison_document(evaluation: Evaluation, a: str, b: str, *, seed: int) -> dict[str, Any]:
    """Return judge `a` minus judge `b` on both accuracies, with paired bootstrap 95% intervals."""
    document: dict[str, Any] = {"a": a, "b": b, "n_users": len(evaluation.users)}
    for metric in ("accuracy", "accuracy_per_order"):
        difference = evaluation.difference(a, b, metric=metric, seed=seed)
        document[metric] = (
            {"difference": difference.difference, "ci95": [difference.ci_low, difference.ci_high]}
            if difference
            else None
        )
    return document


PIPELINE_NOTE = "pipeline check, not method quality"
METRICS_NOTE = (
    "macro_accuracy: debiased (both orders combined into one verdict, the product's judge); "
    "macro_accuracy_per_order: each order scored alone, ties 0 (PersonalRewardBench's protocol); "
    "position_consistency: share of pairs whose two orders name the same reply. All over the users "
    "every judge judged (excluded_users lists the others)."
)


@dataclass(frozen=True)
class AccuracyRequest:
    """What one accuracy run evaluates and how."""

    data: Path
    judges: tuple[str, ...] = JUDGES
    users: int | None = None
    seed: int = 0
    search: Search = "default"
    cache_dir: Path | None = Path(".bench-cache")
    compare: tuple[str, str] | None = None
    # the offline judges fit each user with the tastes the file's other users share
    shared_tastes: bool = True

    def __post_init__(self) -> None:
        if self.compare is not None:
            missing = [name for name in self.compare if name not in self.judges]
            if missing or self.compare[0] == self.compare[1]:
                raise ValueError(
                    f"compare needs two different judges among those run ({', '.join(self.judges)}), "
                    f"got {','.join(self.compare)}"
                )


def cache_namespace(settings: Settings, role: str) -> str:
    """Name a model's results in the LLM cache: its role, model, endpoint and log-probability setting."""
    if settings.uses_endpoint:
        name = (settings.judge_model or settings.model) if role == "judge" else settings.model
        model = f"{name} at {settings.openai_base_url or 'api.openai.com'}"
    else:
        model = settings.model_label
    return f"{role} | {model} | logprobs={settings.logprobs}"


def run_accuracy(
    request: AccuracyRequest,
    settings: Settings,
    *,
    chat_model: BaseChatModel | None = None,
    judge_model: BaseChatModel | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the accuracy benchmark and return its JSON document (models built from settings if not given)."""
    from agent.formats import read_pairs
    from persona_agent.benchmarks.llm_cache import SQLiteLLMCache, attach_cache
    from persona_agent.factory import chat_options

    started = time.perf_counter()
    pairs = read_pairs(request.data, skip_invalid=True, limits=settings.limits)
    splits, skipped_users = user_splits(pairs, users=request.users, seed=request.seed)
    names = tuple(request.judges)
    uses_llm = any(name in LLM_JUDGES for name in names)
    caches: list[SQLiteLLMCache] = []
    if uses_llm:
        from persona_agent.factory import build_chat_model, build_judge_model

        chat_model = chat_model or build_chat_model(settings)
        judge_model = judge_model or build_judge_model(settings)
        for role, model in (("chat", chat_model), ("judge", judge_model)):
            cache = None
            if request.cache_dir is not None:
                cache = SQLiteLLMCache(
                    request.cache_dir / "llm.sqlite", namespace=cache_namespace(settings, role)
                )
                caches.append(cache)
            attach_cache(model, cache)
    # The chat graph's own options: judges and retrieval run as they do in a chat turn.
    options = chat_options(settings)
    fitter = (
        synthesizer_for(request.search, chat_model, judge_model, settings=settings, seed=request.seed)
        if chat_model is not None and judge_model is not None and FIT_JUDGES & set(names)
        else None
    )
    from persona_agent.factory import build_embeddings

    offline = None
    embedding_cache = None
    if {"offline", "hybrid"} & set(names):
        from agent.embedding import CachedEmbedder
        from agent.features import FeatureExtractor

        if request.cache_dir is not None:
            digest = hashlib.sha256(str(request.data.resolve()).encode()).hexdigest()[:12]
            embedding_cache = request.cache_dir / f"minilm_{request.data.parent.name}_{digest}.npz"
        embedder = CachedEmbedder(build_embeddings(settings, purpose="replies"), embedding_cache)
        offline = OfflineModels(pairs, FeatureExtractor(embedder))
        offline.prepare(splits, shared_tastes=request.shared_tastes)
        if embedding_cache is not None:
            embedder.save(embedding_cache)
    judges = BenchJudges(
        judge_model=judge_model,
        fitter=fitter,
        options=options,
        offline=offline,
        store=new_store(build_embeddings(settings, purpose="retrieval")) if "retrieved" in names else None,
    )
    evaluation = asyncio.run(run_judges(splits, judges.builders(names), on_progress=on_progress))
    embedded = uses_llm and not settings.uses_endpoint
    return {
        "suite": "accuracy",
        "data": str(request.data),
        "model": settings.model_label if uses_llm else None,
        "judge_model": (settings.judge_model or settings.model)
        if uses_llm and settings.uses_endpoint
        else None,
        "model_note": f"embedded SmolLM2-135M: {PIPELINE_NOTE}" if embedded else None,
        "search": request.search,
        "seed": request.seed,
        "offline_prior": offline.prior_source if offline else None,
        "metrics": METRICS_NOTE,
        "judges": {name: judge_document(evaluation, name, seed=request.seed) for name in names},
        "comparison": comparison_document(evaluation, *request.compare, seed=request.seed)
        if request.compare
        else None,
        "users": user_rows(splits, judges),
        "skipped_users": [{"user_id": user, "reason": why} for user, why in skipped_users.items()],
        "excluded_users": [
            {"user_id": user, "failed_judges": failed} for user, failed in evaluation.excluded.items()
        ],
        "llm": {
            "test_calls": {
                name: judges.trackers[name].report().total.calls for name in names if name in LLM_JUDGES
            },
            "fit_calls": sum(result.usage.total.calls for result in judges.fits.values()),
            "cache": str(caches[0].path) if caches else None,
            "cache_hits": sum(cache.hits for cache in caches),
            "cache_misses": sum(cache.misses for cache in caches),
        },
        "seconds": round(time.perf_counter() - started, 2),
    }
