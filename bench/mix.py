"""bench/mix.py: the traffic bench/run sends, as an Okta org's real traffic looks.

Every request is new: a fresh eventId and a fresh code, to a number that repeats only after
hundreds of thousands of requests, from a user that repeats only after 250,000. Two mixes:

  intl  (the default) 19 countries in proportions an international Okta org sees, +1 (US and
        Canada) 40 %; 15 % voice calls (half of them to fixed lines); each country's own locales
  us    the same shape with every number in the US (the North American fast path)

The numbers are made here from libphonenumber's own example numbers (Debian's python3-phonenumbers,
the same release as the libphonenumber telehook links): for each country, "stems" (a valid number
less its last 4 digits, varied from the example in the digits before those 4) are kept only when
every one of 40 random suffixes gives a number libphonenumber calls valid and of the wanted type.
okta.lua then builds each request from a stem and a counter (see its header).
"""
import json
import random

# region, share of requests (%), locales Okta may send for its users (cycled)
INTL = [
    ("US", 36, ["en-US", "EN-US", "es-US"]),
    ("CA", 4, ["en-CA", "fr-CA"]),
    ("GB", 8, ["en-GB"]),
    ("IN", 7, ["en-IN", "hi-IN"]),
    ("DE", 6, ["de-DE", "de"]),
    ("BR", 5, ["pt-BR"]),
    ("FR", 4, ["fr-FR", "fr"]),
    ("MX", 4, ["es-MX"]),
    ("AU", 3, ["en-AU"]),
    ("JP", 3, ["ja-JP", "ja"]),
    ("ES", 3, ["es-ES", "es"]),
    ("IT", 3, ["it-IT"]),
    ("PH", 2, ["en-PH", "fil-PH"]),
    ("NL", 2, ["nl-NL"]),
    ("PL", 2, ["pl-PL"]),
    ("ZA", 2, ["en-ZA"]),
    ("SG", 2, ["en-SG", "zh-SG"]),
    ("SE", 2, ["sv-SE"]),
    ("AE", 2, ["ar-AE", "en-AE"]),
]
US = [("US", 100, ["en-US", "EN-US", "es-US"])]
MIXES = {"intl": INTL, "us": US}
VOICE_PCT = 15           # of the requests of every country
SUFFIXES = 10000         # numbers per stem
NUMBERS = 300000         # distinct numbers at least (each country: its share of them)
USERS = 250000           # distinct Okta users, cycled
SLOTS = 200              # the schedule: SLOTS requests in the mix's proportions, shuffled


def _stems(pn, region, ptype, want, rng):
    """want stems of region's numbers of type ptype (varied from libphonenumber's example)."""
    T = pn.PhoneNumberType
    ok_types = {ptype, T.FIXED_LINE_OR_MOBILE}
    ex = pn.example_number_for_type(region, ptype)
    e164 = pn.format_number(ex, pn.PhoneNumberFormat.E164)
    cc = f"+{ex.country_code}"
    nat = e164[len(cc):]
    body = nat[:-4]
    stems, seen, tries = [], set(), 0
    while len(stems) < want and tries < 20000:
        tries += 1
        digits = list(body)
        if tries > 1:  # keep the leading digits (the type's prefix), vary up to 3 of the rest
            lead = 1 if len(digits) > 1 else 0
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(lead, len(digits))
                digits[k] = str(rng.randrange(10))
        stem = cc + "".join(digits)
        if stem in seen:
            continue
        seen.add(stem)
        good = True
        for _ in range(40):
            n = pn.parse(stem + f"{rng.randrange(SUFFIXES):04d}", None)
            if not pn.is_valid_number(n) or pn.number_type(n) not in ok_types \
                    or pn.region_code_for_number(n) != region:
                good = False
                break
        if good:
            stems.append(stem)
    if len(stems) < want:
        raise SystemExit(f"bench/mix.py: only {len(stems)} of {want} {region} stems found")
    return stems


def build(mix, seed=20261205):
    """The mix as a Lua table literal for okta.lua (countries, schedule, users)."""
    import phonenumbers as pn
    rng = random.Random(seed)
    countries = MIXES[mix]
    total = sum(c[1] for c in countries)
    out, sched = [], []
    # voice slots per country: VOICE_PCT of its slots, rounded so that the total is exact
    slots = [SLOTS * c[1] // total for c in countries]
    want = [n * VOICE_PCT / 100 for n in slots]
    voices = [int(w) for w in want]
    for i in sorted(range(len(want)), key=lambda i: want[i] - voices[i], reverse=True):
        if sum(voices) >= round(sum(slots) * VOICE_PCT / 100):
            break
        voices[i] += 1
    for idx, (region, share, locales) in enumerate(countries):
        n_mobile = max(1, -(-NUMBERS * share // (total * SUFFIXES)))  # ceil
        mobile = _stems(pn, region, pn.PhoneNumberType.MOBILE, n_mobile, rng)
        fixed = _stems(pn, region, pn.PhoneNumberType.FIXED_LINE, max(1, n_mobile // 4), rng)
        out.append({"region": region, "mobile": mobile, "fixed": fixed, "locales": locales})
        sched += [(idx + 1, "Voice" if k < voices[idx] else "SMS") for k in range(slots[idx])]
    rng.shuffle(sched)
    return out, sched


def lua(mix, seed=20261205):
    countries, sched = build(mix, seed)
    parts = ["{\n name = %s,\n users = %d,\n suffixes = %d,\n countries = {\n" % (
        json.dumps(mix), USERS, SUFFIXES)]
    for c in countries:
        parts.append("  {region = %s, mobile = {%s}, fixed = {%s}, locales = {%s}},\n" % (
            json.dumps(c["region"]), ",".join(json.dumps(s) for s in c["mobile"]),
            ",".join(json.dumps(s) for s in c["fixed"]),
            ",".join(json.dumps(s) for s in c["locales"])))
    parts.append(" },\n schedule = {%s},\n}" % ",".join(
        "{%d,%s}" % (i, json.dumps(ch)) for i, ch in sched))
    summary = {c["region"]: len(c["mobile"]) * SUFFIXES for c in countries}
    return "".join(parts), summary, sched
