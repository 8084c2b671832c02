"""Generate the example legal training set and its held-out rubric suite (seeded, deterministic).

    python examples/legal/generate.py            # rewrites train.jsonl, suite.jsonl, rl-tasks.jsonl
    python examples/legal/generate.py --check    # exit 1 if the committed files are stale

Sixteen task kinds in four practice areas (immigration, employment, landlord-tenant,
contracts). Every kind has one answer template — the governing provision, the deadline, a
recommendation, a caution that promises nothing, and the client's facts carried over — so a
tiny model can learn it in a few hundred SFT steps, while the suite's prompts are new: client
names, employers and sellers come from pools that training never uses, and every suite
prompt is checked against the training prompts before anything is written.

``rl-tasks.jsonl`` holds rubric *training* tasks for the RL stages (recipe-rl.yaml): made like
the suite's, but with the training pools' people and facts, their own seed and ids (``rl-…``),
and prompts that are neither in the suite nor in the SFT data.

The law is simplified for a demonstration (federal rules, California for landlord-tenant);
it is not legal advice.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
TRAIN_SEED = 20240611
SUITE_SEED = 20240917
TRAIN_PER_KIND = 40  # 16 kinds -> 640 training examples
SUITE_PER_KIND = 8  # 16 kinds -> 128 suite tasks
RL_SEED = 20251203
RL_PER_KIND = 8  # 16 kinds -> 128 rubric training tasks
MAX_NEW_TOKENS = 160

FIRST_TRAIN = [
    "Maria",
    "Daniel",
    "Aisha",
    "Tomas",
    "Priya",
    "Samuel",
    "Elena",
    "Marcus",
    "Lucia",
    "Kevin",
    "Fatima",
    "Omar",
    "Grace",
    "Victor",
    "Nadia",
    "Peter",
    "Rosa",
    "Hassan",
    "Irene",
    "Jorge",
    "Leila",
    "Martin",
    "Sofia",
    "Andre",
    "Chen",
    "Olga",
    "Rahul",
    "Teresa",
    "Ivan",
    "Amara",
]
LAST_TRAIN = [
    "Alvarez",
    "Brooks",
    "Chen",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ibrahim",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nguyen",
    "Okafor",
    "Patel",
    "Quinn",
    "Rossi",
    "Santos",
    "Tanaka",
    "Ueda",
    "Vargas",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zhang",
    "Novak",
    "Silva",
    "Mendez",
    "Park",
]
FIRST_SUITE = [
    "Beatriz",
    "Callum",
    "Dmitri",
    "Esther",
    "Farid",
    "Gloria",
    "Henrik",
    "Ines",
    "Jamal",
    "Keiko",
    "Lorenzo",
    "Miriam",
    "Nikolai",
    "Odette",
    "Pablo",
    "Renata",
    "Stefan",
    "Thandiwe",
    "Umar",
    "Yara",
]
LAST_SUITE = [
    "Abara",
    "Bianchi",
    "Castillo",
    "Delacroix",
    "Eriksen",
    "Ferreira",
    "Gallagher",
    "Horvat",
    "Iqbal",
    "Jovanovic",
    "Kaplan",
    "Lindqvist",
    "Mwangi",
    "Nakamura",
    "Oyelaran",
    "Petrov",
    "Ramos",
    "Sorensen",
    "Takahashi",
    "Valdez",
]
EMPLOYERS_TRAIN = (
    "Brightline Systems",
    "Harbor Logistics",
    "Summit Dental Group",
    "Pioneer Foods",
    "Keystone Analytics",
    "Redwood Staffing",
    "Atlas Manufacturing",
    "Bluewater Hotels",
    "Cedar Health",
    "Northgate Retail",
)
EMPLOYERS_SUITE = (
    "Granite Robotics",
    "Meridian Clinics",
    "Oakridge Builders",
    "Silverline Telecom",
    "Willow Creek Farms",
)
SELLERS_TRAIN = (
    "Apex Appliances",
    "Coastal Motors",
    "Home Comfort Co.",
    "Prime Solar",
    "Valley Furniture",
    "Metro Electronics",
)
SELLERS_SUITE = ("Evergreen Windows", "Lakeside Boats", "Sunrise Fitness Supply")
CITIES = (
    "Los Angeles",
    "San Diego",
    "San Jose",
    "Fresno",
    "Oakland",
    "Sacramento",
    "Long Beach",
    "Riverside",
)
COUNTRIES = ("Honduras", "Eritrea", "Venezuela", "Afghanistan", "Cameroon", "Myanmar")
VISAS = ("F-1", "B-2", "J-1", "H-2B")
BASES = ("pregnancy", "race", "religion", "national origin", "sex")
LEAVE_REASONS = ("surgery", "the birth of a child", "caring for a parent with cancer")
DEFECTS = ("heater", "water heater", "roof", "front door lock")
PRODUCTS = ("a dishwasher", "a used pickup truck", "a water softener", "solar panels", "a sofa")
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


@dataclass(frozen=True)
class Kind:
    """One task kind: a situation template and the answer template it calls for."""

    key: str
    area: str
    provision: str
    rule: str
    deadline_variants: tuple[str, ...]  # empty: no deadline criterion
    deadline: str
    action: str
    action_keyword: str
    situation: str  # the prompt's facts
    facts: str  # the memo's one-line summary of them
    fact_key: str | None = None  # a second fact the memo must carry over
    extra: Callable[[random.Random], dict[str, str]] = field(default=lambda rng: {})


def _rent(rng: random.Random) -> dict[str, str]:
    return {"amount": f"{rng.randrange(900, 3200, 25):,}"}


def _goods_price(rng: random.Random) -> dict[str, str]:
    return {"amount": f"{rng.randrange(600, 9000, 50):,}"}


KINDS: tuple[Kind, ...] = (
    # immigration
    Kind(
        "h1b-grace",
        "immigration",
        "8 CFR 214.1(l)(2)",
        "a grace period after H-1B work ends",
        ("60 days", "sixty days"),
        "60 days after the last day of work",
        "file a change of status within the 60 days",
        "change of status",
        "{name} holds H-1B status and was laid off by {employer} on {date}.",
        "laid off by {employer} on {date}",
        "employer",
    ),
    Kind(
        "asylum-one-year",
        "immigration",
        "INA 208(a)(2)(B)",
        "the asylum filing deadline",
        ("one year", "1 year", "one-year"),
        "one year from the last arrival",
        "file Form I-589 now",
        "I-589",
        "{name} arrived in the United States from {country} on {date} and fears returning.",
        "arrived from {country} on {date}",
        "country",
    ),
    Kind(
        "unlawful-presence",
        "immigration",
        "INA 212(a)(9)(B)",
        "a 3-year bar after unlawful presence",
        ("180 days",),
        "the bar starts after 180 days of unlawful presence",
        "not travel until we review a waiver",
        "waiver",
        "The {visa} status of {name} expired on {date}, and {name} plans to visit {country}.",
        "{visa} status expired on {date}",
        "visa",
    ),
    Kind(
        "naturalization",
        "immigration",
        "INA 316(a)",
        "5 years of permanent residence before naturalization",
        ("90 days", "ninety days"),
        "file up to 90 days before the 5-year anniversary",
        "file Form N-400 in that window",
        "N-400",
        "{name} became a lawful permanent resident on {date} and lives in {city}.",
        "permanent resident since {date}, living in {city}",
        "city",
    ),
    # employment
    Kind(
        "title-vii-charge",
        "employment",
        "42 U.S.C. 2000e-5(e)(1)",
        "the EEOC charge deadline",
        ("180 days", "300 days"),
        "180 days, or 300 days in a deferral state",
        "file a charge with the EEOC",
        "EEOC",
        "{name} was fired by {employer} on {date} after complaining of harassment "
        "based on {basis}.",
        "fired by {employer} on {date}",
        "employer",
    ),
    Kind(
        "flsa-overtime",
        "employment",
        "29 U.S.C. 255(a)",
        "the time limit for unpaid overtime",
        ("2 years", "two years"),
        "2 years, or 3 years if willful",
        "collect pay stubs and time records",
        "pay stubs",
        "{name} has worked about {hours} hours a week at {employer} since {date} "
        "without overtime pay.",
        "{hours} hours a week at {employer}",
        "employer",
    ),
    Kind(
        "fmla-leave",
        "employment",
        "29 U.S.C. 2612(a)(1)",
        "12 weeks of job-protected leave",
        ("12 weeks", "twelve weeks"),
        "12 weeks of leave, with 30 days of notice",
        "give written notice to the employer",
        "written notice",
        "{name} has worked at {employer} since {date} and needs leave for {reason}.",
        "works at {employer} and needs leave for {reason}",
        "employer",
    ),
    Kind(
        "warn-notice",
        "employment",
        "29 U.S.C. 2102(a)",
        "notice before a mass layoff",
        ("60 days", "sixty days"),
        "60 days of written notice",
        "claim back pay for the missing notice",
        "back pay",
        "{employer} closed its {city} plant on {date} and laid off {name} and {count} "
        "coworkers without notice.",
        "laid off by {employer} on {date}",
        "employer",
    ),
    # landlord-tenant (California)
    Kind(
        "pay-or-quit",
        "landlord-tenant",
        "Cal. Code Civ. Proc. 1161(2)",
        "a notice to pay rent or quit",
        ("3 days", "three days"),
        "3 days, not counting weekends",
        "pay the rent and keep proof of payment",
        "proof of payment",
        "{name} rents an apartment in {city} and got a notice on {date} demanding "
        "${amount} in back rent.",
        "rents in {city}, notice on {date}",
        "city",
        _rent,
    ),
    Kind(
        "security-deposit",
        "landlord-tenant",
        "Cal. Civ. Code 1950.5(g)",
        "return of a security deposit",
        ("21 days", "twenty-one days"),
        "21 days after move-out",
        "send a written demand for the deposit",
        "written demand",
        "{name} moved out of a rental in {city} on {date}, and the ${amount} deposit has "
        "not been returned.",
        "moved out in {city} on {date}",
        "city",
        _rent,
    ),
    Kind(
        "landlord-entry",
        "landlord-tenant",
        "Cal. Civ. Code 1954",
        "notice before a landlord enters",
        ("24 hours", "twenty-four hours"),
        "24 hours of written notice",
        "keep a log and object in writing",
        "log",
        "The landlord of {name} in {city} entered the unit on {date} without any notice.",
        "landlord entered in {city} on {date}",
        "city",
    ),
    Kind(
        "repair-and-deduct",
        "landlord-tenant",
        "Cal. Civ. Code 1942",
        "repair and deduct",
        ("30 days", "thirty days"),
        "30 days after written notice",
        "give written notice of the {defect}",
        "written notice",
        "{name} rents a home in {city}; the {defect} has been broken since {date} and the "
        "landlord ignores calls.",
        "{defect} broken in {city} since {date}",
        "city",
    ),
    # contracts
    Kind(
        "ucc-limitations",
        "contracts",
        "UCC 2-725",
        "the limitation period for a sale of goods",
        ("4 years", "four years"),
        "4 years from delivery",
        "file suit before the 4 years end",
        "file suit",
        "{name} bought {product} from {seller}, delivered on {date}, and it failed within weeks.",
        "bought {product} from {seller}",
        "seller",
    ),
    Kind(
        "cooling-off",
        "contracts",
        "16 CFR 429.1",
        "cancelling a door-to-door sale",
        ("3 business days", "three business days"),
        "3 business days after the sale",
        "send a signed cancellation notice",
        "cancellation notice",
        "A salesperson from {seller} sold {name} {product} for ${amount} at home on {date}.",
        "bought {product} from {seller} at home",
        "seller",
        _rent,
    ),
    Kind(
        "notice-of-breach",
        "contracts",
        "UCC 2-607(3)(a)",
        "notice of a defect to the seller",
        ("reasonable time",),
        "a reasonable time after discovery",
        "send the seller written notice now",
        "written notice",
        "{name} found on {date} that {product} bought from {seller} is defective.",
        "defective {product} from {seller}",
        "seller",
    ),
    Kind(
        "statute-of-frauds",
        "contracts",
        "UCC 2-201",
        "a signed writing for goods of $500 or more",
        (),
        "none for this question",
        "gather signed emails or order forms",
        "signed",
        "{name} agreed by phone on {date} to buy {product} from {seller} for ${amount}, and "
        "the seller now denies the deal.",
        "oral deal with {seller} for ${amount}",
        "seller",
        _goods_price,
    ),
)

PROMPTS = {
    "memo": (
        "Draft a short client memo for {name}. {situation}",
        "Please write a brief memo to our client {name}. {situation}",
        "Client memo needed. {situation} Address it to {name}.",
    ),
    "deadline": (
        "{situation} What is the deadline, and what should {name} do now?",
        "Deadline question: {situation} How long does {name} have, and what is the next step?",
        "{situation} {name} asks how much time is left. Please advise.",
    ),
    "issues": (
        "Spot the issues: {situation}",
        "Issue-spotting request for the file of {name}. {situation} "
        "Identify the rule and next steps.",
        "Review these facts and flag the legal issues for {name}: {situation}",
    ),
}
STYLES = ("memo", "deadline", "issues")

ANSWER = (
    "Memo to {name}.\n"
    "Rule: {provision}, {rule}.\n"
    "Deadline: {deadline}.\n"
    "Facts: {facts}.\n"
    "We recommend that {name} {action}.\n"
    "No outcome is promised."
)


@dataclass(frozen=True)
class Pools:
    first: list[str]
    last: list[str]
    employers: tuple[str, ...]
    sellers: tuple[str, ...]


TRAIN_POOLS = Pools(FIRST_TRAIN, LAST_TRAIN, EMPLOYERS_TRAIN, SELLERS_TRAIN)
SUITE_POOLS = Pools(FIRST_SUITE, LAST_SUITE, EMPLOYERS_SUITE, SELLERS_SUITE)


def _facts(kind: Kind, rng: random.Random, pools: Pools) -> dict[str, str]:
    year = rng.choice((2023, 2024, 2025))
    facts = {
        "first": rng.choice(pools.first),
        "last": rng.choice(pools.last),
        "employer": rng.choice(pools.employers),
        "seller": rng.choice(pools.sellers),
        "city": rng.choice(CITIES),
        "country": rng.choice(COUNTRIES),
        "visa": rng.choice(VISAS),
        "basis": rng.choice(BASES),
        "reason": rng.choice(LEAVE_REASONS),
        "defect": rng.choice(DEFECTS),
        "product": rng.choice(PRODUCTS),
        "hours": str(rng.randrange(45, 71, 5)),
        "count": str(rng.randrange(60, 400, 10)),
        "date": f"{rng.choice(MONTHS)} {rng.randint(1, 28)}, {year}",
        "amount": f"{rng.randrange(25, 900, 5):,}",
    }
    facts.update(kind.extra(rng))
    facts["name"] = f"{facts['first']} {facts['last']}"
    return facts


def _example(kind: Kind, style: str, rng: random.Random, pools: Pools) -> tuple[str, str, dict]:
    facts = _facts(kind, rng, pools)
    situation = kind.situation.format(**facts)
    situation = situation[0].upper() + situation[1:]
    prompt = rng.choice(PROMPTS[style]).format(situation=situation, name=facts["name"])
    answer = ANSWER.format(
        name=facts["name"],
        provision=kind.provision,
        rule=kind.rule,
        deadline=kind.deadline,
        facts=kind.facts.format(**facts),
        action=kind.action.format(**facts),
    )
    return prompt, answer, facts


def _criteria(kind: Kind, style: str, facts: dict[str, str], rng: random.Random) -> list[dict]:
    """3–6 deterministic criteria; which ones depends on what the prompt asks for."""
    provision = {
        "description": f"Names the governing provision ({kind.provision})",
        "check": {"type": "contains", "value": kind.provision},
    }
    deadline = {
        "description": f"States the deadline ({(kind.deadline_variants or ('',))[0]})",
        "check": {"type": "any_of", "values": list(kind.deadline_variants), "ignore_case": True},
    }
    recommend = {
        "description": f"Recommends the next step ({kind.action_keyword})",
        "check": {
            "type": "all_of",
            "values": ["we recommend", kind.action_keyword],
            "ignore_case": True,
        },
    }
    recommend_regex = {
        "description": "Gives an explicit recommendation",
        "check": {"type": "regex", "pattern": r"\bwe recommend\b", "ignore_case": True},
    }
    no_overclaim = {
        "description": "Does not promise an outcome",
        "check": {"type": "not_contains", "value": "guarantee", "ignore_case": True},
    }
    client = {
        "description": f"Carries over the client's name ({facts['last']})",
        "check": {"type": "contains", "value": facts["last"]},
    }
    fact_value = facts[kind.fact_key] if kind.fact_key else None
    fact = {
        "description": f"Carries over the client's facts ({fact_value})",
        "check": {"type": "contains", "value": fact_value},
    }
    has_deadline = bool(kind.deadline_variants)
    if style == "memo":
        chosen = [provision, *([deadline] if has_deadline else []), recommend, no_overclaim, client]
        if fact_value and rng.random() < 0.5:
            chosen.append(fact)
    elif style == "deadline":
        chosen = [provision, *([deadline] if has_deadline else []), recommend_regex, no_overclaim]
    else:
        chosen = [provision, no_overclaim, client]
        if has_deadline and rng.random() < 0.5:
            chosen.insert(1, deadline)
    return [{"id": f"c{i}", **c} for i, c in enumerate(chosen, start=1)]


AREA_PREFIX = {
    "immigration": "imm",
    "employment": "emp",
    "landlord-tenant": "lt",
    "contracts": "con",
}


def canonical(text: str) -> str:
    """Same normalisation as pipeline.eval.holdout.canonical_prompt (kept standalone)."""
    import re
    import unicodedata

    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def build_train() -> list[dict]:
    rng = random.Random(TRAIN_SEED)
    rows, seen = [], set()
    for kind in KINDS:
        made = 0
        while made < TRAIN_PER_KIND:
            style = STYLES[made % len(STYLES)]
            prompt, answer, _ = _example(kind, style, rng, TRAIN_POOLS)
            if canonical(prompt) in seen:
                continue
            seen.add(canonical(prompt))
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": prompt},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
            made += 1
    random.Random(TRAIN_SEED + 1).shuffle(rows)
    return rows


def build_suite(
    train_prompts: set[str],
    *,
    seed: int = SUITE_SEED,
    per_kind: int = SUITE_PER_KIND,
    pools: Pools = SUITE_POOLS,
    id_prefix: str = "",
) -> tuple[list[dict], dict[str, str]]:
    """The suite's tasks, and the answer the training template gives for each (by task id).
    With the RL arguments: rubric training tasks, made the same way from other people."""
    rng = random.Random(seed)
    tasks, seen = [], set(train_prompts)
    answers: dict[str, str] = {}
    counters = dict.fromkeys(AREA_PREFIX, 0)
    for kind in KINDS:
        made = 0
        while made < per_kind:
            style = STYLES[made % len(STYLES)]
            prompt, answer, facts = _example(kind, style, rng, pools)
            if canonical(prompt) in seen:
                continue
            seen.add(canonical(prompt))
            counters[kind.area] += 1
            task_id = f"{id_prefix}{AREA_PREFIX[kind.area]}-{counters[kind.area]:04d}"
            answers[task_id] = answer
            tasks.append(
                {
                    "id": task_id,
                    "practice_area": kind.area,
                    "messages": [{"role": "user", "content": prompt}],
                    "criteria": _criteria(kind, style, facts, rng),
                    "metadata": {"kind": kind.key, "style": style},
                }
            )
            made += 1
    return tasks, answers


def reference_answers() -> dict[str, str]:
    """What a model that learnt the training templates perfectly would answer, per suite task."""
    train_prompts = {canonical(r["messages"][0]["content"]) for r in build_train()}
    return build_suite(train_prompts)[1]


def build_rl_tasks(taken: set[str]) -> list[dict]:
    """Rubric training tasks: the training pools' people, prompts outside ``taken``."""
    tasks, _ = build_suite(
        taken, seed=RL_SEED, per_kind=RL_PER_KIND, pools=TRAIN_POOLS, id_prefix="rl-"
    )
    return tasks


def render() -> tuple[str, str, str]:
    train = build_train()
    train_prompts = {canonical(r["messages"][0]["content"]) for r in train}
    suite, _ = build_suite(train_prompts)
    taken = train_prompts | {canonical(t["messages"][0]["content"]) for t in suite}
    rl_tasks = build_rl_tasks(taken)
    header = {
        "suite": {
            "name": "legal-example",
            "max_new_tokens": MAX_NEW_TOKENS,
            "description": "Held-out legal tasks generated by examples/legal/generate.py",
        }
    }
    train_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train)
    suite_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [header, *suite])
    rl_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rl_tasks)
    return train_text, suite_text, rl_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output directory")
    parser.add_argument("--check", action="store_true", help="fail if the files are stale")
    args = parser.parse_args(argv)
    train_text, suite_text, rl_text = render()
    targets = {
        args.out / "train.jsonl": train_text,
        args.out / "suite.jsonl": suite_text,
        args.out / "rl-tasks.jsonl": rl_text,
    }
    if args.check:
        stale = [
            str(p) for p, text in targets.items() if not p.is_file() or p.read_text("utf-8") != text
        ]
        if stale:
            print("stale: " + ", ".join(stale), file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
