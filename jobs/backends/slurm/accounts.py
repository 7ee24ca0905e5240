"""Project accounts on Slurm through slurmrestd's accounting API (slurmdb): one Slurm account
per project, an association per member, and the project's limits as association limits.

Every version-specific shape (paths, body field names, how a limit is written) is in one
`AccountsApi` entry of `VERSIONS`; adding a slurmrestd version is adding an entry.

Limits: GrpTRESMins=billing=<minutes> (the allocation, in billing-TRES minutes: the partition's
TRESBillingWeights are set to the portal's rates in SU per unit-minute, so one billing minute
is `billing_per_su` SU) and GrpTRES=gres/<gpu_tres>=<N> (the concurrent GPU cap). With
AccountingStorageEnforce=associations,limits,safe, PriorityDecayHalfLife=0 and
PriorityUsageResetPeriod=NONE the account's usage never decays and a job starts only if it can
finish within the limit.

Slurm 22.05 (v0.0.38) quirks, found on the dev cluster and built around here:
- An account's own association must be sent with "user": "" (left out, slurmrestd complains
  and the modify path later ignores it) and, when it is created, with "parent_account" (without
  it slurmdbd does not create it and every user association of the account then fails with
  "Couldn't get left"). slurmdbd 22.05 then files it as a top-level association (sacctmgr shows
  no parent), which is what makes later limit changes work: modifying an association that has a
  parent through this API is silently dropped (the request carries the parent and slurmdbd
  takes it as a move to the same parent). Limits are enforced on it as on any account.
- slurmdbd accepts unknown user names and never checks the Unix user: the portal only
  associates users it knows (ClusterAccount). A refused association answers errno -1
  ("Unspecified error"), taken here as a refusal, not an outage.

Slurm 23.11+ (v0.0.40, v0.0.41, v0.0.42; found on the 24.11 dev cluster): the same body shapes
(GrpTRESMins under max.tres.group.minutes, GrpTRES under max.tres.total, TRES lists of
{"type", "name", "count"}; "user" is required, "" for the account's own association), but
- an account association created with "parent_account" is filed with a broken lineage
  ("/<parent>/0-/", no parent shown); the same association sent again (in the same POST) files
  it as a proper child ("/<parent>/<account>/"). So a new account's own association is sent
  twice, and every later push carries "parent_account" too (which repairs an old one);
- limit changes of an account with a parent are applied (unlike 22.05), and a modify replaces
  the association's TRES limits: one left out is cleared (so a held cap is always sent);
- lists in query parameters are repeated (?account=a&account=b); "a,b" is a 400.
Paths are relative to the version (ApiVersion.dbd) and every call goes through the backend's
version seam (SlurmBackend.dbd_call), so an upgrade that drops a version re-negotiates.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from jobs.backends.base import AccountSpec, AccountState, BackendError
from jobs.backends.slurm.rest import SlurmRestError
from jobs.backends.slurm.versions import ApiVersion

logger = logging.getLogger(__name__)

UNLIMITED = -1  # Slurm's "no limit" (INFINITE) for a TRES count in a modify request
# A refused batch is bisected to find the accounts Slurm refuses, within this many extra calls
# per push; groups still unresolved then are all recorded as refused (and retried later).
BISECT_CALLS = 32


@dataclass(frozen=True)
class AccountsApi:
    """How one slurmrestd version takes accounts, associations and limits (paths relative to
    the version's /slurmdb/<version>/, as SlurmBackend.dbd_call takes them)."""

    accounts: str  # POST {"accounts": [...]} creates (or leaves) accounts
    associations: str  # GET ?cluster&account=a,b / POST {"associations": [...]} / DELETE
    grp_tres_mins: tuple[str, ...]  # where GrpTRESMins sits in an association
    grp_tres: tuple[str, ...]  # where GrpTRES sits
    account_level_user: str  # the "user" of an account's own association in a request
    parent_on_create: bool  # send the cluster's account option as parent when creating
    # Send the parent on every push (a modify with the parent is a no-op move, not dropped).
    parent_always: bool = False
    # Send a new account's own association twice in its POST (the second files it properly).
    create_twice: bool = False


_V38 = AccountsApi(
    accounts="/accounts",
    associations="/associations",
    grp_tres_mins=("max", "tres", "group", "minutes"),
    grp_tres=("max", "tres", "total"),
    account_level_user="",
    parent_on_create=True,
)
# v0.0.40, v0.0.41 and v0.0.42: checked against the 24.11 slurmdbd (see the docstring).
_V40 = AccountsApi(
    accounts="/accounts/",
    associations="/associations/",
    grp_tres_mins=("max", "tres", "group", "minutes"),
    grp_tres=("max", "tres", "total"),
    account_level_user="",
    parent_on_create=True,
    parent_always=True,
    create_twice=True,
)
VERSIONS: dict[str, AccountsApi] = {
    "v0.0.38": _V38,
    "v0.0.40": _V40,
    "v0.0.41": _V40,
    "v0.0.42": _V40,
}


def api_for(version: str) -> AccountsApi:
    try:
        return VERSIONS[version]
    except KeyError:
        raise BackendError(
            f"Project accounts are not supported over slurmrestd {version}"
        ) from None


# The backend's dbd_call: (method, path relative to the version, user=, json=, params=,
# permanent_errnos=) -> body. json/params may be functions of the ApiVersion.
DbdCall = Callable[..., dict[str, Any] | None]


def _dig(body: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def _put(body: dict[str, Any], path: Sequence[str], value: Any) -> None:
    for key in path[:-1]:
        body = body.setdefault(key, {})
    body[path[-1]] = value


def billing_minutes(limit_su: Decimal, billing_per_su: Decimal) -> int:
    """GrpTRESMins=billing for `limit_su` SU (rounded down: never more than the allocation)."""
    return max(0, int((limit_su * billing_per_su).to_integral_value(rounding=ROUND_FLOOR)))


def _tres_text(items: Any) -> str:
    """A TRES list as sacctmgr writes it ("billing=120,gres/gpu=2"), sorted."""
    parts = []
    for item in items or ():
        if not isinstance(item, dict) or item.get("count") in (None, UNLIMITED):
            continue
        name = f"{item.get('type')}/{item['name']}" if item.get("name") else str(item.get("type"))
        parts.append(f"{name}={item['count']}")
    return ",".join(sorted(parts))


class SlurmAccounts:
    """push/read of project accounts for one cluster (used by SlurmBackend)."""

    def __init__(
        self,
        *,
        call: DbdCall,
        version: Callable[[], ApiVersion],
        slurm_cluster: str,
        operator: str,
        parent: str,
        gpu_tres: str,
        billing_per_su: Decimal,
    ) -> None:
        self.call = call
        self.version = version
        self.slurm_cluster = slurm_cluster
        self.operator = operator
        self.parent = parent
        self.gpu_tres = gpu_tres
        self.billing_per_su = billing_per_su

    @property
    def api(self) -> AccountsApi:
        # The version is negotiated lazily by the backend (a network call): ask at use.
        return api_for(self.version().version)

    # --- reading -------------------------------------------------------------------------

    def _associations(self, names: Collection[str]) -> list[dict[str, Any]]:
        if not names:
            return []
        cluster = self.slurm_cluster
        accounts = sorted(names)
        body = self.call(
            "GET",
            self.api.associations,
            user=self.operator,
            params=lambda api: {"cluster": cluster, "account": api.list_param(accounts)},
        )
        wanted = set(names)
        return [
            a
            for a in (body or {}).get("associations") or ()
            if isinstance(a, dict) and a.get("account") in wanted
        ]

    def read(self, names: Collection[str]) -> dict[str, AccountState]:
        """What slurmdbd holds for these accounts (one GET): users and limits."""
        users: dict[str, list[str]] = defaultdict(list)
        limits: dict[str, dict[str, str]] = {}
        for assoc in self._associations(names):
            name = str(assoc["account"])
            if assoc.get("user"):
                users[name].append(str(assoc["user"]))
            else:
                limits[name] = {
                    "GrpTRESMins": _tres_text(_dig(assoc, self.api.grp_tres_mins)),
                    "GrpTRES": _tres_text(_dig(assoc, self.api.grp_tres)),
                }
        return {
            name: AccountState(name=name, users=tuple(sorted(users[name])), limits=lim)
            for name, lim in limits.items()
        }

    def limits_for(self, spec: AccountSpec) -> dict[str, str]:
        """The limits `spec` asks for, written as read() reports them (to compare)."""
        out = {"GrpTRESMins": "", "GrpTRES": ""}
        if spec.closed:
            out["GrpTRESMins"] = "billing=0"
        elif spec.limit_su is not None:
            out["GrpTRESMins"] = f"billing={billing_minutes(spec.limit_su, self.billing_per_su)}"
        if spec.gpu_cap is not None:
            out["GrpTRES"] = f"gres/{self.gpu_tres}={0 if spec.closed else spec.gpu_cap}"
        elif spec.closed:
            out["GrpTRES"] = f"gres/{self.gpu_tres}=0"
        return out

    # --- pushing -------------------------------------------------------------------------

    def _account_association(
        self, spec: AccountSpec, new: bool, held_cap: bool = False
    ) -> dict[str, Any]:
        api = self.api
        assoc: dict[str, Any] = {
            "account": spec.name,
            "cluster": self.slurm_cluster,
            "user": api.account_level_user,
        }
        if self.parent and (api.parent_always or (new and api.parent_on_create)):
            assoc["parent_account"] = self.parent
        limits = self.limits_for(spec)
        minutes = limits["GrpTRESMins"].partition("=")[2]
        _put(
            assoc,
            api.grp_tres_mins,
            [{"type": "billing", "count": int(minutes) if minutes else UNLIMITED}],
        )
        cap = limits["GrpTRES"].partition("=")[2]
        if cap or held_cap:
            # A cap neither wanted nor held is left out: a misnamed GPU TRES then fails only
            # the accounts that ask for a cap.
            _put(
                assoc,
                api.grp_tres,
                [{"type": "gres", "name": self.gpu_tres, "count": int(cap) if cap else UNLIMITED}],
            )
        return assoc

    def push(self, specs: Sequence[AccountSpec]) -> dict[str, str]:
        """Create/update these accounts, associations and limits; {name: Slurm's refusal}.

        Calls: one GET (what exists), one POST accounts (new ones), one POST associations
        (all), and one DELETE per member leaving (rare). A POST refused as a whole is bisected
        to find the accounts Slurm refuses; the others are applied."""
        if not specs:
            return {}
        by_name = {spec.name: spec for spec in specs}
        existing_users: dict[str, set[str]] = defaultdict(set)
        existing: set[str] = set()
        capped: set[str] = set()  # accounts slurmdbd holds a GrpTRES for
        for assoc in self._associations(by_name):
            name = str(assoc["account"])
            if assoc.get("user"):
                existing_users[name].add(str(assoc["user"]))
            else:
                existing.add(name)
                if _tres_text(_dig(assoc, self.api.grp_tres)):
                    capped.add(name)
        new = [spec for spec in specs if spec.name not in existing]
        refused: dict[str, str] = {}
        if new:
            try:
                self.call(
                    "POST",
                    self.api.accounts,
                    user=self.operator,
                    json={
                        "accounts": [
                            {
                                "name": spec.name,
                                "description": f"GPU Commons project {spec.project}"[:200],
                                "organization": self.parent or "gpucommons",
                            }
                            for spec in new
                        ]
                    },
                )
            except SlurmRestError as exc:
                # One bad account fails the list: the association pass below finds which.
                logger.warning("Slurm %s refused accounts: %s", self.slurm_cluster, exc)
        groups = []
        for spec in specs:
            is_new = spec.name not in existing
            own = self._account_association(spec, is_new, held_cap=spec.name in capped)
            group = [own, own] if is_new and self.api.create_twice else [own]
            users = () if spec.closed else spec.users
            group += [
                {"account": spec.name, "cluster": self.slurm_cluster, "user": user}
                for user in sorted(set(users) - existing_users[spec.name])
            ]
            groups.append((spec.name, group))
        self._post_associations(groups, refused, budget=[BISECT_CALLS])
        self._remove_users(specs, existing_users, refused)
        return refused

    def _post_associations(
        self,
        groups: Sequence[tuple[str, list[dict[str, Any]]]],
        refused: dict[str, str],
        budget: list[int],
    ) -> None:
        if not groups:
            return
        budget[0] -= 1
        try:
            self.call(
                "POST",
                self.api.associations,
                user=self.operator,
                json={"associations": [a for _, group in groups for a in group]},
                permanent_errnos=frozenset({-1}),
            )
        except SlurmRestError as exc:
            if len(groups) == 1 or budget[0] < 2:
                for name, _ in groups:
                    refused[name] = str(exc)[:1000]
                return
            half = len(groups) // 2
            self._post_associations(groups[:half], refused, budget)
            self._post_associations(groups[half:], refused, budget)

    def _remove_users(
        self,
        specs: Sequence[AccountSpec],
        existing_users: dict[str, set[str]],
        refused: dict[str, str],
    ) -> None:
        """DELETE the associations of users no longer wanted: one call per leaving user (the
        accounts of one user in one call: user × accounts is exactly the set to remove)."""
        leaving: dict[str, list[str]] = defaultdict(list)
        for spec in specs:
            keep = set() if spec.closed else set(spec.users)
            for user in existing_users[spec.name] - keep:
                leaving[user].append(spec.name)
        for user, accounts in sorted(leaving.items()):
            try:
                self.call(
                    "DELETE",
                    self.api.associations,
                    user=self.operator,
                    params=self._leaving_query(user, sorted(accounts)),
                    permanent_errnos=frozenset({-1}),
                )
            except SlurmRestError as exc:
                for name in accounts:
                    refused.setdefault(name, f"removing {user}: {exc}"[:1000])

    def _leaving_query(self, user: str, accounts: list[str]) -> Callable[[ApiVersion], Any]:
        def query(api: ApiVersion) -> dict[str, Any]:
            return {
                "cluster": self.slurm_cluster,
                "account": api.list_param(accounts),
                "user": user,
            }

        return query
