"""Resumable sweeps and compact records.

A job's *fingerprint* hashes its composed config, leaving out what cannot change its numbers
(Hydra's own settings, logging, resume flags, where records go). A sweep remembers every job it
starts in ``job_index`` (fingerprint -> run directory); rerunning the sweep command skips a job
whose run completed with the same fingerprint, or whose compact record exists, and continues a
killed job in its old run directory from its checkpoint. The sweep folder may be timestamped
(the index finds the job's earlier folder) or pinned (``hydra.sweep.dir=X``: the job's own
folder holds what its earlier run left).

A result is reused only when the code that computes numbers is the same (:func:`code_identity`),
unless ``reuse=any`` asks for reuse across code versions; ``reuse=never`` reruns every job.

A *record* is a small JSON copy of a completed run's results (config essentials, metrics,
selected layers and gates, parameters, wall time, commit) written under ``records`` when that
key is set: one file per run, meant to be committed, from which ``spt-run table`` rebuilds
tables without rerunning anything.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from spt_cli.config import (
    REUSE_POLICIES,
    ROLE_KEYS,
    group_choices,
    read_config_file,
    to_plain,
)
from spt_cli.files import read_json_object, write_json

# Top-level keys that never change a run's numbers.
NOT_FINGERPRINTED = (
    "hydra", "resume", "debug", "logger", "records", "job_index", "runs", "lower_cache_dir",
    "table", "reuse",
)  # fmt: skip
RECORD_FORMAT = "spt-cli-record/1"
LINK_FILE = "same_as.json"


# Modules (paths below spt_cli/) that orchestrate, validate, log, store or tabulate: a change
# there cannot change a number, so it must not make every earlier result stale. Everything
# else, including modules added later, counts as numeric code.
NOT_NUMERIC = (
    "__init__.py", "cli.py", "preflight.py", "config.py", "jobs.py", "rundir.py", "runlog.py",
    "errors.py", "files.py", "net.py", "stages/results.py", "conf/", "tables/",
)  # fmt: skip


# Keys added after committed records were written, with the value that computes what those
# records computed before the key existed, and the stages they can change. Left out of the
# fingerprint at that value or in another stage, so adding a key does not orphan every record;
# any other value (a new default included) is a new job.
INTRODUCED = {
    ("search", "fallback"): ("none", ("search",)),
    ("search", "alpha_loss"): ("mean", ("search",)),
    ("controls", "include"): ([], ("controls",)),
    ("search", "keep_best_of"): ([], ("search",)),
    ("controls", "shards"): (1, ("controls",)),
    ("controls", "shard"): (0, ("controls",)),
    ("search", "seed"): (None, ("search",)),
    ("search", "dev_ablation"): (False, ("search",)),
    ("controls", "sets"): ([], ("controls",)),
}


def fingerprint(cfg: DictConfig | dict[str, Any]) -> str:
    """12 hex digits identifying what a job computes (its config without bookkeeping keys and
    without `INTRODUCED` keys that cannot change it); ``cfg`` may also be the plain config a
    results.json embeds."""
    config = cfg if isinstance(cfg, dict) else to_plain(cfg)
    plain = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    stage = (config.get("stage") or {}).get("name")
    for (section, key), (before, stages) in INTRODUCED.items():
        group = plain.get(section)
        if (
            isinstance(group, dict)
            and key in group
            and (group[key] == before or stage not in stages)
        ):
            plain[section] = {k: v for k, v in group.items() if k != key}
    return _digest(_canonical_method(plain))


# A method's role keys (config.ROLE_KEYS: which stage runs it, its default layers, the method
# that retrains its search): a shipped method's file fixes them, and they only say in config
# what its name said in code before; left out of the fingerprint at the shipped values.


def _canonical_method(plain: dict[str, Any]) -> dict[str, Any]:
    """``plain`` in the form records were fingerprinted in before the role keys existed and
    before ``method.tau`` became the one temperature key (then ``search.tau_start``, equal to
    it in every run that did not set it apart)."""
    method, search = plain.get("method"), plain.get("search")
    if isinstance(search, dict) and isinstance(method, dict) and "tau_start" not in search:
        # The anneal started from search.tau_start, which a search then set as method.tau
        plain = {**plain, "search": {**search, "tau_start": method.get("tau")}}
    if isinstance(method, dict) and (shipped := _shipped_roles(str(method.get("name")))):
        drop = {k for k in ROLE_KEYS if k in method and method[k] == shipped.get(k)}
        plain = {**plain, "method": {k: v for k, v in method.items() if k not in drop}}
    return plain


@lru_cache(maxsize=64)
def _shipped_roles(name: str) -> dict[str, Any] | None:
    """The role keys of the shipped method file ``name``; None for a name no file ships.
    Cached: fingerprint() runs per job and per earlier result, and reads no file twice."""
    if name not in group_choices("method"):
        return None
    method = to_plain(read_config_file("method", name))
    return {k: method.get(k) for k in ROLE_KEYS}


def _digest(plain: dict[str, Any]) -> str:
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _numeric(rel: str) -> bool:
    """Whether the module at ``rel`` (below spt_cli/) can change a number."""
    return not (rel in NOT_NUMERIC or rel.startswith(tuple(n for n in NOT_NUMERIC if n[-1] == "/")))


def _identity(sources: Iterable[tuple[str, str]]) -> str:
    """``src-<12 hex>`` of (path below spt_cli/, text) pairs, numeric modules only."""
    digest = hashlib.sha256()
    for rel, text in sorted(sources):
        if not rel.endswith(".py") or not _numeric(rel):
            continue
        lines = (line.rstrip() for line in text.splitlines())
        code = "\n".join(line for line in lines if line and not line.lstrip().startswith("#"))
        digest.update(f"{rel}\0{code}\0".encode())
    return "src-" + digest.hexdigest()[:12]


def source_identity(package: Path) -> str:
    """``src-<12 hex>``: a hash of the numeric modules' sources below ``package``.

    Chosen over the git commit because it needs no git (an installed wheel has none), does not
    change with commits that leave the numeric code alone (docs, records, scripts, the CLI),
    and does see uncommitted edits. Blank lines and whole-line comments are left out, so
    rewording a comment does not make results stale; any other edit does.
    """
    return _identity(
        (p.relative_to(package).as_posix(), p.read_text(encoding="utf-8"))
        for p in package.rglob("*.py")
    )


@lru_cache(maxsize=1)
def code_identity() -> str:
    """The identity of the numeric code running now (:func:`source_identity` of spt_cli)."""
    return source_identity(Path(__file__).resolve().parent)


@lru_cache(maxsize=1)
def code_commit() -> str | None:
    """The git commit of the installed spt_cli checkout (``+dirty`` with local changes)."""
    where = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


@lru_cache(maxsize=64)
def commit_identity(commit: str | None, package: Path | None = None) -> str | None:
    """The numeric code identity of a clean ``commit`` of the checkout holding ``package``
    (spt_cli's own folder unless given), for results written before runs noted theirs; None
    when unknown (no git, as in an installed wheel; a commit not in this history; uncommitted
    changes)."""
    if not commit or commit.endswith("+dirty"):
        return None
    where = package or Path(__file__).resolve().parent
    try:
        tar = subprocess.run(
            ["git", "-C", str(where), "archive", "--format=tar", commit, "."],
            capture_output=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            sources = [
                (m.name, archive.extractfile(m).read().decode("utf-8"))  # type: ignore[union-attr]
                for m in archive.getmembers()
                if m.isfile() and m.name.endswith(".py")
            ]
    except (OSError, subprocess.SubprocessError, tarfile.TarError, UnicodeDecodeError):
        return None
    return _identity(sources)


# -- records -----------------------------------------------------------------------------------
def record_path(records: Path, results: dict[str, Any], fp: str) -> Path:
    """``<records>/<task>/<method>/<stage>-<shots>shot-seed<seed>-<fingerprint>.json``."""
    name = f"{results['stage']}-{results['shots']}shot-seed{results['seed']}-{fp}.json"
    return records / str(results["task"]) / str(results["method"]) / name


def make_record(results: dict[str, Any], fp: str, overrides: list[str]) -> dict[str, Any]:
    """The compact form of a completed run's ``results.json``: same keys for what tables
    read, plus the config sections that set the numbers and the job's overrides."""
    config = results.get("config") or {}
    keep = ("task", "method", "stage", "model", "shots", "seed", "status", "main_metric",
            "head", "dev", "test", "majority_baseline", "selected_layers", "gate_probs",
            "prompt_layers", "best_step", "steps", "search_diagnostics", "wall_time_s",
            "degenerate", "selection")  # fmt: skip
    # The commit that ran it (a record carried later, for a skipped job, keeps it); results
    # written before runs noted their commit fall back on the code's commit now.
    versions = results.get("versions") or {}
    commit = versions.get("commit") or code_commit()
    # The numeric code's identity only when the run noted it: an older run's is unknown.
    record = {"format": RECORD_FORMAT, "fingerprint": fp, "commit": commit,
              "code": versions.get("code")}  # fmt: skip
    record.update({k: results[k] for k in keep if k in results})
    params = results.get("parameters") or {}
    counts = ("trainable", "backbone", "percent")
    record["parameters"] = {k: params[k] for k in counts if k in params}
    record["overrides"] = list(overrides)
    sections = ("method", "trainer", "search", "data")
    record["config"] = {k: config[k] for k in sections if k in config}
    return record


def write_record(cfg: DictConfig, results: dict[str, Any], overrides: list[str]) -> Path | None:
    """Write the run's record under ``cfg.records`` (nothing when that key is null)."""
    if not cfg.records:
        return None
    fp = fingerprint(cfg)
    path = record_path(Path(str(cfg.records)), results, fp)
    write_json(path, make_record(results, fp, overrides))
    return path


def find_record(records: Path, fp: str) -> Path | None:
    """A completed record with fingerprint ``fp`` below ``records``."""
    for path in sorted(records.glob(f"*/*/*-{fp}.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if data.get("fingerprint") == fp and data.get("status") == "completed":
            return path
    return None


# -- the job index -----------------------------------------------------------------------------
@dataclass
class Prior:
    """What an earlier run of the same job left, and what the rerun does with it.

    ``state``: ``completed`` (skip the job), ``resumable`` (continue from its checkpoint),
    ``stale`` (completed, but ``reuse`` refuses it: the job runs again), ``occupied`` (the
    job's own pinned folder holds a completed result that is not reused: never overwritten)
    or None (nothing before).
    """

    state: str | None = None
    run_dir: Path | None = None
    record: Path | None = None
    commit: str | None = None  # the commit that produced a completed result, when known
    same_code: bool = False  # produced by the numeric code running now
    same_config: bool = True  # False: ``occupied`` by another config's result

    @property
    def where(self) -> Path | None:
        """The run directory or record holding the earlier result."""
        return self.run_dir or self.record

    @property
    def made(self) -> str:
        """``at commit C`` (or ``at an unknown commit``), for messages."""
        return f"at commit {self.commit}" if self.commit else "at an unknown commit"


def occupied_problem(prior: Prior, policy: str) -> str:
    """Why a sweep job cannot run in its own (pinned) folder: it holds a finished result the
    rerun would not reuse, and a finished result is never overwritten."""
    if not prior.same_config:
        return (
            f"{prior.run_dir} holds the completed result of another config; give this sweep "
            "another hydra.sweep.dir (a finished result is never overwritten)"
        )
    if policy == "never":
        return (
            f"reuse=never but {prior.run_dir} holds this job's completed result "
            f"({prior.made}); give another hydra.sweep.dir to rerun it beside that one"
        )
    return (
        f"{prior.run_dir} holds this job's result {prior.made} with other code; reuse=any "
        "keeps it, or another hydra.sweep.dir reruns it beside that one"
    )


def _reusable(code: str | None, policy: str) -> bool:
    """Whether ``reuse=policy`` accepts a result (or checkpoint) of numeric code ``code``."""
    if policy not in REUSE_POLICIES:
        raise ValueError(f"reuse={policy!r} is not one of {REUSE_POLICIES}")
    return policy == "any" or (policy == "same_code" and code == code_identity())


def noted_versions(data: dict[str, Any]) -> dict[str, Any]:
    """Where a result notes the ``commit`` and ``code`` that produced it: a results.json under
    ``versions``, a record at its top."""
    versions = data.get("versions")
    return versions if isinstance(versions, dict) else data


def _completed_prior(data: dict[str, Any], policy: str, **where: Path) -> Prior:
    """A completed result (results.json or record) judged by the reuse policy."""
    source = noted_versions(data)
    commit = source.get("commit")
    code = source.get("code") or commit_identity(commit)  # older results: from their commit
    state = "completed" if _reusable(code, policy) else "stale"
    return Prior(state, commit=commit, same_code=code == code_identity(), **where)


def find_prior(cfg: DictConfig, run_dir: Path) -> Prior:
    """The earlier run of this job (same fingerprint) that a rerun sweep should reuse.

    Looks at the records folder, the job index's entry, and ``run_dir`` itself (a pinned
    sweep folder puts the rerun job in the folder of its earlier run).
    """
    fp, policy = fingerprint(cfg), str(cfg.reuse)
    own = run_dir.resolve()
    stale = Prior()
    if cfg.records and (rec := find_record(Path(str(cfg.records)), fp)):
        if (data := read_json_object(rec)) is not None:
            prior = _completed_prior(data, policy, record=rec)
            if prior.state == "completed":
                return prior
            stale = prior
    entry = read_json_object(Path(str(cfg.job_index)) / f"{fp}.json") or {}
    indexed = Path(str(entry["run_dir"])).resolve() if "run_dir" in entry else None
    for old in dict.fromkeys(p for p in (indexed, own) if p is not None):
        if not old.is_dir():
            continue
        results = read_json_object(old / "results.json")
        if results is not None and results.get("status") == "completed":
            config = results.get("config")
            if isinstance(config, dict) and fingerprint(config) == fp:
                prior = _completed_prior(results, policy, run_dir=old)
                if prior.state == "completed":
                    return prior
                if old == own:
                    prior.state = "occupied"
                    return prior
                stale = stale if stale.state else prior
            elif old == own:  # a pinned folder reused by another config: keep its result
                return Prior("occupied", run_dir=old, same_config=False)
            continue
        # A killed run: its index entry vouches for the config (and names the code) of the
        # checkpoint; a folder without one may hold anything, and starts afresh.
        if (
            old == indexed
            and (old / "checkpoints").is_dir()
            and not (old / "failed.json").exists()
            and _reusable(entry.get("code"), policy)
        ):
            return Prior("resumable", run_dir=old, same_code=entry.get("code") == code_identity())
    return stale


def remember(cfg: DictConfig, run_dir: Path) -> None:
    """Note in the job index that this job runs in ``run_dir`` with the code running now."""
    entry = Path(str(cfg.job_index)) / f"{fingerprint(cfg)}.json"
    write_json(entry, {"run_dir": str(run_dir.resolve()), "code": code_identity()})


def carry_record(cfg: DictConfig, prior: Prior, overrides: list[str]) -> Path | None:
    """A skipped job's record in ``cfg.records`` too, when it completed under another records
    folder (a grid's runs reused by a table sweep), or replacing a record there that ``reuse``
    refused; nothing when a reusable one is there already. The record keeps the commit and
    code identity of the run that produced it."""
    if not cfg.records or prior.state != "completed":
        return None
    fp = fingerprint(cfg)
    existing = find_record(Path(str(cfg.records)), fp)
    data = read_json_object(existing) if existing else None
    # Judged as find_prior judges it: an older record without ``code`` by its commit's.
    if data is not None and _completed_prior(data, str(cfg.reuse)).state == "completed":
        return None
    if prior.record is not None:
        record = json.loads(prior.record.read_text(encoding="utf-8"))
        path = record_path(Path(str(cfg.records)), record, fp)
        write_json(path, record)
        return path
    assert prior.run_dir is not None
    results = json.loads((prior.run_dir / "results.json").read_text(encoding="utf-8"))
    return write_record(cfg, results, overrides)


def link(run_dir: Path, prior: Prior) -> None:
    """Leave a pointer in the new (unused) job directory to where the job's result lives."""
    write_json(run_dir / LINK_FILE, {"state": prior.state, "same_as": str(prior.where)})
