"""A labelled test set for runtime.screen.redact: PII and secrets in realistic screen text, and ordinary text.

CASES: each kind in several formats (forms, terminal output, chat, documents, config files), with the
exact strings that must come out redacted as that kind. Card numbers and IBANs are generated here with
their checksums (Luhn, ISO 13616 mod-97); tokens are random strings in each provider's format, made at
import from a fixed seed, so no real-looking secret sits in the repository. National IDs are the
published specimen numbers of each format (valid check digits).

ORDINARY: paragraphs of normal prose and technical text (dates, versions, prices, order and tracking
numbers, hashes, addresses, numbers shaped like phone numbers) in which nothing may be redacted.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

_rng = random.Random(20261202)


@dataclass(frozen=True)
class Case:
    """`secrets` occur in `text` and must each be redacted, entirely, as `kind`; `fmt` names the format."""

    kind: str
    fmt: str
    text: str
    secrets: tuple[str, ...]


def _case(kind: str, fmt: str, template: str, *secrets: str) -> Case:
    return Case(kind, fmt, template.format(*secrets), secrets)


# ---------------------------------------------------------------- generators

def luhn_number(prefix: str, length: int) -> str:
    """A random number of `length` digits starting with `prefix` whose last digit makes the Luhn sum 0 mod 10."""
    body = prefix + "".join(_rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):  # the check digit will sit right of body: double every other from it
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def iban(country: str, bban: str) -> str:
    """The IBAN for `bban`: check digits 98 - (BBAN + country + "00" as digits, A=10..Z=35) mod 97."""
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def grouped(value: str, sizes: tuple[int, ...] | int = 4, sep: str = " ") -> str:
    """`value` cut into groups (fixed size, or the given sizes) joined by `sep`."""
    if isinstance(sizes, int):
        return sep.join(value[i:i + sizes] for i in range(0, len(value), sizes))
    parts, position = [], 0
    for size in sizes:
        parts.append(value[position:position + size])
        position += size
    return sep.join(parts)


def token(alphabet: str, length: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(length))


_ALNUM = string.ascii_letters + string.digits
_UPPER_B32 = string.ascii_uppercase + "234567"
_URLSAFE = _ALNUM + "-_"


# ---------------------------------------------------------------- cards

_visa = luhn_number("4", 16)
_visa2 = luhn_number("4", 16)
_mc = luhn_number("53", 16)
_mc2 = luhn_number("2221", 16)
_amex = luhn_number("37", 15)
_discover = luhn_number("6011", 16)
_jcb = luhn_number("35", 16)
_diners = luhn_number("36", 14)
_unionpay = luhn_number("62", 19)
_maestro = luhn_number("6759", 16)
_visa13 = luhn_number("4", 13)
_amex2 = luhn_number("34", 15)

CARDS = (
    _case("card", "form, groups of 4 with spaces", "Cardholder name: Maria Keller\nCard number: {}\nExpiry: 08/27  CVC: 314",
          grouped(_visa)),
    _case("card", "dashes", "Payment method updated: {} (Visa)", grouped(_visa2, sep="-")),
    _case("card", "unseparated in a log", "2026-03-14T10:22:31Z WARN checkout: charge failed pan={} amount=49.99 EUR", _mc),
    _case("card", "Mastercard 2-series in chat", "[10:41] Tom: use the company card {} for the hotel", grouped(_mc2)),
    _case("card", "Amex 4-6-5", "AMERICAN EXPRESS\n{}\nVALID THRU 11/28", grouped(_amex, (4, 6, 5))),
    _case("card", "OCR double spaces", "Card  {}  exp 02/29", grouped(_discover, sep="  ")),
    _case("card", "followed by CVV", "cc: {} 123", grouped(_jcb)),
    _case("card", "Diners 14 digits 4-6-4", "Diners Club {} issued to R. Osei", grouped(_diners, (4, 6, 4))),
    _case("card", "UnionPay 19 digits", "UnionPay card no. {}", grouped(_unionpay, (4, 4, 4, 4, 3))),
    _case("card", "Maestro in a document", "Please debit my Maestro card {} for the amount of the invoice.",
          grouped(_maestro)),
    _case("card", "Visa 13 digits", "old card on file: {}", _visa13),
    _case("card", "CSV row", "id,name,card,country\n118,Lena Fischer,{},DE", grouped(_amex2, (4, 6, 5), "-")),
    _case("card", "dash with spaces (OCR)", "Kartennummer {}", grouped(_visa, sep=" - ")),
)

# ---------------------------------------------------------------- IBANs

_ibans = {
    "GB": iban("GB", "WEST12345698765432"), "DE": iban("DE", "370400440532013000"),
    "FR": iban("FR", "20041010050500013M02606"), "NL": iban("NL", "ABNA0417164300"),
    "ES": iban("ES", "21000418450200051332"), "IT": iban("IT", "X0542811101000000123456"),
    "CH": iban("CH", "00762011623852957"), "AT": iban("AT", "1904300234573201"),
    "PL": iban("PL", "109010140000071219812874"), "SE": iban("SE", "50000000058398257466"),
    "IE": iban("IE", "AIBK93115212345678"), "NO": iban("NO", "86011117947"), "DE2": iban("DE", "500105175407324931"),
}

IBANS = (
    _case("iban", "print format, form", "Account holder: Jan de Vries\nIBAN: {}\nBIC: ABNANL2A", grouped(_ibans["NL"])),
    _case("iban", "electronic format", "Überweisung an {} Betrag 1.250,00 EUR", _ibans["DE"]),
    _case("iban", "print format then BIC", "IBAN {} BIC COBADEFFXXX", grouped(_ibans["DE2"])),
    _case("iban", "GB in an email", "Hi, please pay the deposit into {} by Friday. Thanks!", grouped(_ibans["GB"])),
    _case("iban", "FR with letters in BBAN", "RIB / IBAN : {}", grouped(_ibans["FR"])),
    _case("iban", "ES in a table", "| Proveedor | IBAN |\n| Acme SL | {} |", grouped(_ibans["ES"])),
    _case("iban", "IT in config", "payout_iban = \"{}\"", _ibans["IT"]),
    _case("iban", "CH OCR double spaces", "Konto {}", grouped(_ibans["CH"], sep="  ")),
    _case("iban", "AT in chat", "Anna: meine IBAN ist {}", grouped(_ibans["AT"])),
    _case("iban", "PL dashes", "Numer konta: {}", grouped(_ibans["PL"], sep="-")),
    _case("iban", "SE in a document", "Payment is due within 30 days to {} (SEB).", grouped(_ibans["SE"])),
    _case("iban", "IE in terminal output", "$ bank-cli show payee 7\nname: Ciara Byrne\niban: {}", grouped(_ibans["IE"])),
    _case("iban", "sentence end", "Bank: ING, IBAN {}.", grouped(iban("NL", "ABNA0123456789"))),
    _case("iban", "NO short IBAN", "Kontonummer (IBAN) {}", grouped(_ibans["NO"])),
)

# ---------------------------------------------------------------- national IDs


def _ssn() -> str:
    return f"{_rng.randint(1, 665):03d}-{_rng.randint(1, 99):02d}-{_rng.randint(1, 9999):04d}"


def _dni() -> str:
    n = _rng.randint(10_000_000, 99_999_999)
    return f"{n}{'TRWAGMYFPDXBNJZSQVHLCKE'[n % 23]}"


NATIONAL_IDS = (
    _case("national_id", "US SSN dashes, form", "Social Security Number\n{}\nDate of birth 04/12/1986", _ssn()),
    _case("national_id", "US SSN spaces", "SSN: {}", _ssn().replace("-", " ")),
    _case("national_id", "US SSN bare with label", "employee.ssn={}", _ssn().replace("-", "")),
    _case("national_id", "UK NI number spaced", "National Insurance number: {}", "AB 12 34 56 C"),
    _case("national_id", "UK NI number compact in chat", "Priya: my NI is {} if HR needs it", "JG103759A"),
    _case("national_id", "UK NHS number with label", "NHS No: {}", "943 476 5919"),
    _case("national_id", "Spain DNI", "DNI/NIF: {}", _dni()),
    _case("national_id", "Spain NIE", "NIE {} (residencia)", "X1234567L"),
    _case("national_id", "Italy codice fiscale", "Codice fiscale: {}", "RSSMRA85T10A562S"),
    _case("national_id", "France NIR grouped", "N° de sécurité sociale : {}", "2 95 10 99 126 111 93"),
    _case("national_id", "Sweden personnummer", "Personnummer: {}", "811218-9876"),
    _case("national_id", "Finland HETU", "Henkilötunnus {}", "131052-308T"),
    _case("national_id", "Belgium national number", "Rijksregisternummer: {}", "85.07.30-033.28"),
    _case("national_id", "Netherlands BSN with label", "BSN {}", "111222333"),
    _case("national_id", "Poland PESEL with label", "PESEL: {}", "44051401359"),
    _case("national_id", "Germany tax ID with label", "Steuer-ID: {}", "36 574 261 809"),
)

# ---------------------------------------------------------------- phones

PHONES = (
    _case("phone", "US with +1 and parentheses", "Contact: Dana Whitfield, {}", "+1 (415) 555-0132"),
    _case("phone", "US dashes in a document", "For support call {} between 9am and 5pm.", "212-555-0187"),
    _case("phone", "US dots in a signature", "Kevin O'Brien | Sales\n{}", "617.555.0144"),
    _case("phone", "US toll free", "Hotline {}", "1-800-555-0199"),
    _case("phone", "UK international", "Phone: {}", "+44 20 7946 0958"),
    _case("phone", "UK national London", "Ring the office on {} tomorrow", "020 7946 0958"),
    _case("phone", "UK mobile", "[09:12] Sam: new number is {}", "07700 900123"),
    _case("phone", "UK with (0)", "Tel. {}", "+44 (0)161 496 0000"),
    _case("phone", "German international", "Telefon: {}", "+49 30 12345678"),
    _case("phone", "German national with slash", "Rückruf bitte unter {}", "089/1234567"),
    _case("phone", "German mobile", "Handy {}", "0171 2345678"),
    _case("phone", "French spaced pairs", "Portable : {}", "06 12 34 56 78"),
    _case("phone", "French dots", "appelez le {}", "01.23.45.67.89"),
    _case("phone", "French international", "WhatsApp {}", "+33 6 12 34 56 78"),
    _case("phone", "00 international prefix", "Fax {}", "0044 20 7946 0959"),
    _case("phone", "India", "Mobile: {}", "+91 98765 43210"),
    _case("phone", "Japan dashes", "TEL {}", "+81 3-1234-5678"),
    _case("phone", "unseparated with label", "mobile: {}", "0612345678"),
    _case("phone", "OCR double space", "call me {}", "(415)  555-0178"),
    _case("phone", "E.164 compact in a contact card", "BEGIN:VCARD\nFN:Ines Duarte\nTEL;TYPE=cell:{}\nEND:VCARD",
          "+351912345678"),
    _case("phone", "German area code / number", "Kontakt: {}", "0221 / 987654"),
    _case("phone", "German mobile with (0)", "Mob. {}", "+49 (0) 151 23456789"),
    _case("phone", "Australian with area code in parentheses", "reach us: {}", "(02) 9876 5432"),
    _case("phone", "label on the line above", "Phone\n{}", "+46 8 123 456 78"),
    _case("phone", "CSV row", "name,email,phone\nIvo Petrov,,{}", "+359 2 987 6543"),
)

# ---------------------------------------------------------------- emails

EMAILS = (
    _case("email", "form field", "Email address\n{}", "maria.keller@example.com"),
    _case("email", "plus tag", "Sent a confirmation to {}", "j.smith+newsletter@gmail.com"),
    _case("email", "mail header", "From: Lena Fischer <{}>\nTo: team@acme.io", "lena.fischer@mail.acme-corp.de"),
    _case("email", "git log author", "commit 3f2c9a1\nAuthor: Raj Patel <{}>\nDate:   Mon Mar 3 10:12:00 2026",
          "raj@patel.dev"),
    _case("email", "mailto link", "Write to us: mailto:{}", "support@shop.example.co.uk"),
    _case("email", "uppercase", "CONTACT {}", "HR-TEAM@CONTOSO.COM"),
    _case("email", "chat", "[14:02] ana: ping me at {} pls", "ana_2026@proton.me"),
    _case("email", "CSV", "id,email\n17,{}", "o.osei@uni-ghana.edu.gh"),
    _case("email", "JSON config", "{{\"admin_email\": \"{}\"}}", "ops@internal.example.org"),
    _case("email", "terminal ssh prompt", "{}'s password:", "deploy@build-03.example.net"),
    _case("email", "sentence end", "Invite sent to {}.", "first_last@company.co.jp"),
    _case("email", "digits and hyphens", "Reply-To: {}", "no-reply-42@notify.service-7.com"),
)

# ---------------------------------------------------------------- keys and tokens

_private_key_body = "\n".join(token(_ALNUM + "+/", 64) for _ in range(5))

KEYS = (
    _case("key", "AWS access key id in credentials file",
          "[default]\naws_access_key_id = {}\nregion = eu-west-1", "AKIA" + token(_UPPER_B32, 16)),
    _case("key", "AWS secret key in credentials file",
          "[default]\naws_secret_access_key = {}", token(_ALNUM + "+/", 40)),
    _case("key", "GitHub classic token in shell", "$ export GITHUB_TOKEN={}", "ghp_" + token(_ALNUM, 36)),
    _case("key", "GitHub fine-grained token", "token: {}", "github_pat_" + token(_ALNUM, 22) + "_" + token(_ALNUM, 59)),
    _case("key", "Slack bot token in chat", "use {} for the bot",
          f"xoxb-{_rng.randint(10**10, 10**11)}-{_rng.randint(10**12, 10**13)}-{token(_ALNUM, 24)}"),
    _case("key", "OpenAI project key in .env", "OPENAI_API_KEY={}", "sk-proj-" + token(_URLSAFE, 48)),
    _case("key", "Anthropic key in a notebook", "client = Anthropic(api_key=\"{}\")",
          "sk-ant-api03-" + token(_URLSAFE, 93) + "AA"),
    _case("key", "JWT in an HTTP header", "Authorization: Bearer {}",
          "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ" + token(_URLSAFE, 60) + "." + token(_URLSAFE, 43)),
    _case("key", "Google API key in JS", "const mapsKey = \"{}\";", "AIza" + token(_URLSAFE, 35)),
    _case("key", "RSA private key block", "$ cat id_rsa\n{}\n$ ",
          f"-----BEGIN RSA PRIVATE KEY-----\n{_private_key_body}\n-----END RSA PRIVATE KEY-----"),
    _case("key", "OpenSSH private key cut off by the screen", "{}",
          f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_private_key_body}"),
    _case("key", "Stripe live key", "STRIPE_SECRET={}", "sk_live_" + token(_ALNUM, 24)),
    _case("key", "generic api key in JSON", "{{\"service\": \"geo\", \"api_key\": \"{}\"}}", token(_ALNUM, 32)),
    _case("key", "generic hex secret in YAML", "webhook:\n  secret: {}", token("0123456789abcdef", 40)),
    _case("key", "bearer token in curl", "curl -H 'Authorization: Bearer {}' https://api.example.com/v1/items",
          token(_ALNUM, 40)),
    _case("key", "Django secret key", "SECRET_KEY = '{}'", "django-insecure-" + token(_URLSAFE, 40)),
    _case("key", "token in a git remote URL", "git remote set-url origin https://{}@github.com/acme/app.git",
          "ghp_" + token(_ALNUM, 36)),
    _case("key", "HTTP basic credentials", "Authorization: Basic {}", "dXNlcjpwYXNzd29yZDEyMzQ1Njc4OTA="),
    _case("key", "Slack webhook URL", "SLACK_WEBHOOK_URL={}",
          f"https://hooks.slack.com/services/T{token(_UPPER_B32, 8)}/B{token(_UPPER_B32, 10)}/{token(_ALNUM, 24)}"),
)

# ---------------------------------------------------------------- passwords

PASSWORDS = (
    _case("password", "login form", "Username: mkeller\nPassword: {}\n[ Sign in ]", "Summer2026!"),
    _case("password", "config key=value", "db.host=10.0.4.12\ndb.password={}", "Xq7#pL2vR9"),
    _case("password", "env file quoted", "POSTGRES_PASSWORD=\"{}\"", "correct horse battery staple"),
    _case("password", "JSON", "{{\"user\": \"admin\", \"password\": \"{}\"}}", "adm1n-2026"),
    _case("password", "YAML", "smtp:\n  user: mailer\n  password: {}", "m4iler$ecret"),
    _case("password", "passwd in terminal", "$ passwd {}", "N3wPassw0rd"),
    _case("password", "pwd= in a connection string", "Server=sql01;Database=crm;Uid=app;Pwd={};", "Tr0ub4dor&3"),
    _case("password", "chat sentence", "[18:30] Mo: the wifi password is {}", "BlueFalcon77"),
    _case("password", "CLI flag", "$ mysql -u root --password={} shop", "r00tpw!"),
    _case("password", "URL credentials", "DATABASE_URL=postgres://app:{}@db.internal:5432/app", "pG9xK2mQ"),
    _case("password", "German form", "Passwort: {}", "Sonnenblume#12"),
    _case("password", "'is:' in an email", "Your temporary password is: {}", "Xk9-pQ2-mZ7"),
    _case("password", "HTML input value", "<input type=\"password\" name=\"pw\" value=\"{}\">", "hunter22"),
    _case("password", "docker compose environment", "environment:\n  MYSQL_ROOT_PASSWORD: {}", "rootpass123"),
    _case("password", "form OCR'd as two lines", "Password\n{}\n[ Log in ]", "Winter2025!"),
    _case("password", "URL with an empty user", "REDIS_URL=redis://:{}@cache:6379/0", "s3cretRedis"),
    _case("password", "PIN", "PIN: {}", "4821"),
    _case("password", "passphrase in a note", "backup passphrase: {}", "velvet-otter-92"),
    _case("password", "single quoted in Python", "conn = connect(user='etl', password='{}')", "etl_Pa55"),
)

CASES: tuple[Case, ...] = CARDS + IBANS + NATIONAL_IDS + PHONES + EMAILS + KEYS + PASSWORDS

# ---------------------------------------------------------------- ordinary text (nothing to redact)

ORDINARY = (
    """The quarterly report was finally published on 17 May 2024, three weeks later than the team had planned.
Revenue grew by 12.4 percent compared with the same quarter last year, reaching 4,318,250 euros, while operating
costs rose by only 3.1 percent. The board attributed most of the growth to the new subscription tier, priced at
$19.99 per month or $199 per year, which attracted 8,412 new customers between January and March. Churn fell from
5.6 to 4.9 percent. The finance team noted that the exchange rate moved from 1.0823 to 1.0741 during the period,
which reduced reported revenue by roughly 0.8 percent. Headcount stood at 214 at the end of March, up from 198, with
most of the new hires in support and engineering. The next report is due on 2024-08-16 and will include, for the
first time, a breakdown by region: Northern Europe, Southern Europe, North America and Asia Pacific. Analysts at two
banks raised their targets to 48.50 and 51.20 per share, and the stock closed at 46.75 on the day of publication.
The chief executive said the key priority for the second half is to keep the cost of acquiring a customer below 35
euros while expanding into two new markets. Nothing in the report suggested a change to the dividend policy, which
remains at 30 percent of net income, paid twice a year in June and December.""",
    """To install the command line tool, download version 2.14.3 from the releases page and unpack the archive into a
folder on your path. Run the installer with the --prefix option if you do not have write access to /usr/local. The
tool needs Python 3.10 or newer and about 120 MB of free disk space; the first start takes around 4 seconds because
it builds a cache of the plugin index. If you are upgrading from 1.9.x, read the migration notes first: the
configuration file moved from ~/.toolrc to ~/.config/tool/config.toml, and the option named cache_size is now given
in megabytes rather than kilobytes. The default port changed from 8080 to 8731 to avoid clashing with common
development servers. After installing, run tool doctor to check that everything is in place; it prints one line per
check and exits with status 0 when all checks pass. Known issues in this release: the progress bar flickers in some
terminals with fewer than 80 columns, and the export command ignores the --quiet flag. Both are fixed on the main
branch and will ship in 2.14.4, planned for the week of 10 June. Checksums for every archive are listed in the file
SHA256SUMS next to the downloads, and each release is tagged in the repository, for example v2.14.3 at commit
9c1e4b27d0a85f3e61b7c2d94e0f8a3b5c6d7e81.""",
    """Dear customer, thank you for your order. Your order number is 0123 456 789 and it was placed on 05/14/2024 at
10:32. We will send a second message when your parcel leaves our warehouse in Leipzig. The expected delivery window
is Tuesday 21 May to Thursday 23 May. Your parcel will be handled by our logistics partner; the tracking number
1Z999AA10123456784 becomes active within 24 hours of dispatch. Items in this order: one pair of running shoes, size
44.5, article 5012-339-871, price 129.95 EUR; two packs of sports socks, article 5012-118-004, price 2 x 12.50 EUR.
Shipping is free for orders above 50 EUR. The total charged is 154.95 EUR including 19 percent VAT of 24.74 EUR. If
you want to return an item, you have 30 days from delivery; print the return label from your account page and drop
the parcel at any partner shop. Refunds are usually processed within 5 to 7 working days. Please keep this message
for your records. Invoice 2024-INV-004317 will be available in your account once the parcel has shipped. Customer
reference: order 2024 0514 1032. We look forward to seeing you again.""",
    """The museum opened in 1887 in a former textile mill on the eastern bank of the river. Its founder, a merchant who
had travelled widely in the 1860s and 1870s, left a collection of about 3,200 objects, among them ceramics, maps and
scientific instruments. Over the following century the collection grew to more than 41,000 items, and the building
was extended twice, in 1912 and again in 1968. A fire in the winter of 1944 destroyed the west wing and with it a
large part of the map collection; only 212 of the original 1,150 maps survived. Restoration work began in 1951 and
lasted almost nine years. Today the museum welcomes around 180,000 visitors a year. The permanent exhibition is
arranged in chronological order across three floors, from the early modern period on the ground floor to industrial
design on the second. Guided tours in English start at 11:00 and 15:00 every day except Monday, last about 75
minutes and cost 6 euros on top of the entrance fee of 12 euros. Children under 14 enter free of charge. The
library on the top floor holds about 22,000 volumes and can be used by appointment. The key to understanding the
collection, the curators say, is the founder's own catalogue, written by hand between 1871 and 1885.""",
    """Meeting notes, platform team, Thursday. Present: Aisha, Bruno, Chen, Dmitri, Eva. Bruno summarised the incident
from last Friday: between 14:05 and 14:47 UTC about 7 percent of requests to the search service failed with status
503. The cause was a configuration change that reduced the connection pool from 64 to 16 while traffic was at its
weekly peak of roughly 2,900 requests per second. The change was rolled back at 14:41 and the error rate returned to
normal six minutes later. Actions: Chen will add an alert on pool saturation above 85 percent; Eva will add a check
to the deployment pipeline that compares pool sizes against the capacity plan; Dmitri will write the public
postmortem by next Wednesday. Aisha reported on the database upgrade from version 14.9 to 16.2: the staging cluster
has run for two weeks without problems, replication lag stays below 40 ms, and the production upgrade is planned for
the night of 8 to 9 June, with a maintenance window from 01:00 to 03:00. Eva asked whether the token budget for the
summarisation job could be raised from 4,096 to 8,192; agreed for a trial of one week. Next meeting in two weeks,
same time, room 3.14.""",
    """When you bake bread at home, the most important ingredient is time. Mix 500 grams of flour with 350 grams of
water and leave it for 30 minutes before adding 10 grams of salt and 3 grams of dried yeast. Knead the dough for
about 10 minutes until it is smooth, then let it rise at room temperature, around 21 to 23 degrees, for two to three
hours, folding it every 45 minutes. Shape the loaf, place it in a floured basket and leave it in the fridge
overnight, between 12 and 16 hours. The next morning, heat the oven with a cast iron pot inside to 250 degrees for
at least 45 minutes. Bake the loaf with the lid on for 20 minutes, then lower the heat to 230 degrees and bake
another 20 to 25 minutes without the lid until the crust is deep brown. Let it cool for at least one hour before
cutting. A loaf made this way keeps for three to four days in a linen bag. The secret, if there is one, is patience:
a slow, cold rise gives the bread more flavour than any additive could. Many bakers keep a notebook with the date,
flour, hydration and temperature of each bake, for example 2024-03-02, 70 percent, 22 degrees, so that they can
repeat a good result.""",
    """Release notes for version 0.3.36. The engine now streams tokens as soon as they are decoded, which lowers the
time to the first token from about 410 ms to 180 ms on a laptop with 8 GB of memory. Prompt processing is faster for
long inputs: a prompt of 2,048 tokens takes 3.9 seconds instead of 5.2. The memory planner accounts for the compute
buffers of each layer and refuses to load a model that would not fit, with a message that says how much memory is
missing. Key changes in the command line: the plan command prints the context length that fits, and the models list
shows the quantization type of each file, for example Q4_K_M or Q8_0. The server accepts at most 8 waiting requests
by default and answers the ninth with status 429; set server.queue_size to change it. Deprecated: the --ctx-size
flag, replaced by --context; it will be removed in 0.4.0. Fixed: a crash when the model file was on a network share
that disappeared during loading (issue 1432), and wrong byte counts in the progress bar for files above 4 GiB
(issue 1447). Thanks to everyone who reported bugs and tested the release candidates rc1 to rc3 between 2 and 19
November.""",
    """The train from Munich to Vienna leaves at 09:24 from platform 12 and arrives at 13:22, a journey of just under
four hours. Seats can be reserved up to 15 minutes before departure for 5.90 euros. The train has a restaurant car
between carriages 7 and 9, and free wireless internet in all carriages, although the connection is patchy between
Rosenheim and Salzburg. Passengers with bicycles need a separate reservation; there are 8 spaces per train. On
weekdays the service runs every two hours, from 05:24 to 19:24; on Sundays the first train leaves at 07:24. The
cheapest fares start at 29.90 euros if booked at least three weeks in advance, while a flexible ticket costs 93.40
euros. Children aged 6 to 14 travel free when accompanied by a parent or grandparent, as long as they are named on
the ticket. Delays of more than 60 minutes entitle passengers to a refund of 25 percent of the fare, and delays of
more than 120 minutes to 50 percent. The claim form can be filled in online within three months. On 14 and 15
September the line will be closed between Freilassing and Salzburg for track work, and buses will replace trains on
that section, adding about 40 minutes.""",
    """Our study followed 1,204 participants aged 18 to 65 over a period of 24 months. Participants were randomly
assigned to one of three groups of roughly 400 each: a control group, a group receiving weekly reminders, and a group
receiving reminders plus a small reward of 5 euros for each month of complete records. The primary outcome was the
share of days with complete records. In the control group it was 61.3 percent (95 percent confidence interval 58.9
to 63.7), in the reminder group 68.8 percent (66.5 to 71.1) and in the reward group 74.2 percent (72.0 to 76.4). The
difference between the reward and reminder groups was statistically significant, with a p-value of 0.003. Dropout
was 11 percent overall and similar across groups. Secondary outcomes, such as self-reported satisfaction on a scale
from 1 to 7, did not differ between groups (means 5.1, 5.2 and 5.2). A cost analysis showed that the reward
programme cost 9,840 euros over the two years, or 24.60 euros per participant in that group. We discuss limitations
in section 4.2, including the reliance on a single app version, 3.7.1, and the short follow-up after the rewards
ended. Data and code are available on request; the study was registered before recruitment began in March 2021.""",
    """Server inventory, updated weekly. Host web-01 runs at 10.0.4.11 with 16 cores and 64 GB of memory, host
web-02 at 10.0.4.12 with the same configuration, and the database primary db-01 at 10.0.5.21 with 32 cores, 256 GB
and a 3.84 TB NVMe array. The load balancer listens on 443 and forwards to port 8443 on the web hosts. The network
interface of db-01 has the hardware address 3c:ec:ef:12:ab:90. Backups run nightly at 02:30 and are kept for 35 days;
the last full backup, taken on 2024-05-19, was 1.7 TB and finished in 3 hours 12 minutes. Disk usage on the web hosts
is below 40 percent. The monitoring agent reports every 15 seconds. Kernel version 6.1.0-21 is installed everywhere
except web-02, which still runs 6.1.0-18 and is scheduled for a reboot on Saturday. The object identifier of the
storage bucket is 7f3c2a9e-5b1d-4e8f-a6c0-93d2b7e41f05, and the build that is currently deployed is number 20240519.3,
from branch release/2024.05. The public key fingerprint of the deployment host starts with SHA256:Xq2m and is
listed in the runbook. The rotation schedule for credentials is every 90 days, and the next rotation is due on 17
August.""",
    """The history of the bicycle is a story of many small improvements. The first machines of the 1810s had no
pedals at all: riders pushed themselves along with their feet. Pedals attached to the front wheel appeared in the
1860s, and because each turn of the pedals turned the wheel once, makers built ever larger front wheels to go faster,
some as large as 1.5 metres across. These high wheelers were fast but dangerous, and a fall from one could be
serious. The safety bicycle of the 1880s solved the problem with two wheels of equal size and a chain driving the
rear wheel, so that gearing rather than wheel size set the speed. Pneumatic tyres, patented in 1888, made riding far
more comfortable. By 1899 there were an estimated 1 million cyclists in Britain alone. Gears with several ratios
became common in the twentieth century; the derailleur, which moves the chain between sprockets, was refined in the
1930s and 1950s. Modern racing bicycles weigh less than 7 kilograms, the minimum allowed in professional races, and
electric bicycles, which add a motor of up to 250 watts in Europe, now account for more than 40 percent of new
bicycles sold in several countries. The password to their success, one historian wrote, was simplicity.""",
    """Troubleshooting guide. If the application does not start, first check the log file in the folder shown by the
command app --paths. A line such as ERROR 2024-05-20 08:14:03 could not bind 127.0.0.1:8731 means another program
already uses the port; change it in the settings or stop the other program. If the log shows a message about a
missing library, install the package named in the message with your system's package manager and try again. On
laptops with less than 8 GB of memory, choose a smaller model: the 270M model needs about 400 MB, the 1B model about
1.2 GB and the 7B model about 5 GB at 4-bit quantization. If answers are slow, close other programs and check that
the number of threads matches your physical cores, usually 4 or 8. The app stores its history in a single file that
grows by about 1 MB per 1,000 messages; you can delete old conversations from the history screen. To reset all
settings, remove the configuration file; the app creates a new one with default values at the next start. For a
forgotten password to the encrypted history, there is no recovery: the key is derived from the password and never
stored. Error code E1042 means the model file is damaged; download it again or check its checksum against the
value published with it.""",
    """Weekend weather outlook. A band of high pressure moves in from the west on Friday evening, bringing two dry and
mostly sunny days. Temperatures on Saturday reach 24 degrees in the south and 19 degrees on the coast, with a light
breeze from the north west of 10 to 20 kilometres per hour. Overnight temperatures fall to between 9 and 12 degrees.
On Sunday clouds increase from the afternoon, and the first showers reach the coast around 18:00, spreading inland
overnight. Rainfall totals of 5 to 15 millimetres are expected by Monday morning, locally up to 25 millimetres in
thunderstorms. The pollen count is high for grasses and moderate for birch. Sunrise on Saturday is at 05:21 and
sunset at 21:07. Sea temperatures are around 14 degrees. The long range forecast suggests a return to more settled
conditions from Wednesday, with temperatures slightly above the average of 20 degrees for the time of year. The
national weather service issued no warnings for the weekend but advises hikers in the mountains to watch for
afternoon storms on Sunday and to check the latest forecast before setting off. The highest peak in the region,
2,962 metres, may see snow above 2,400 metres on Monday.""",
    """Chat log excerpt. [09:02] Lena: morning, did the nightly build pass? [09:03] Tom: yes, build 4512 is green,
all 1,873 tests passed in 14 min 22 s. [09:04] Lena: great, then we can tag 3.2.0-rc1 today. [09:05] Tom: one thing,
the benchmark for the parser regressed from 412 ms to 436 ms, about 6 percent. [09:06] Lena: within noise? [09:07]
Tom: probably, the machine was busy, I will rerun it three times after lunch. [09:15] Priya: heads up, I moved the
design review to 14:30 in room 2.07 because 2.05 is booked. [09:16] Lena: thanks. Can someone pin the version of the
image library to 10.3.0? The 10.4 release broke the thumbnail tests. [09:18] Tom: done in the lock file, commit
a41f9e2. [09:30] Priya: the customer in ticket 88213 reports that exports of more than 65,535 rows are cut off,
probably the old spreadsheet limit. [09:31] Lena: yes, the xls writer stops there, the xlsx one goes to 1,048,576
rows. Let us switch the default. [09:33] Tom: I can take it, estimate half a day. [09:40] Priya: the secret to fast
reviews is small pull requests, please keep them under 400 lines. [09:41] Lena: agreed, see you at 14:30.""",
    """Device information, as shown on the settings screen. Model: Pixel 7, Android version 14, security patch level
2024-05-05, build number UQ1A.240505.004. Storage: 128 GB, of which 71.3 GB used. Battery health 92 percent after 418
charge cycles. IMEI 356938035643809. Serial number 28131FDH2000KW. Wireless MAC address randomised per network.
Bluetooth version 5.2. Screen resolution 1080 x 2400 pixels at 416 pixels per inch, refresh rate 90 Hz. The last
backup to the cloud was made on 19 May at 03:14 and took 6 minutes; 2,341 photos and 87 videos were included. Apps
installed: 94, of which 12 have not been opened in the last 90 days. Data usage this month: 4.2 GB mobile, 61.8 GB
wireless. The next system update, version 14 QPR3, is 812 MB and will be installed automatically tonight between
02:00 and 05:00 if the phone is charging. The device temperature is 31 degrees. ISBN of the user manual:
978-0-306-40615-7. Regulatory label: FCC ID A4RG82DC, model number G82DC. The carrier profile was updated on 2024-04-28
to version 61.0.2.""",
    """Identifiers that are not personal data, as they appear in logs and documents. Windows 10 version
10.0.19045.3693 was installed at 2024-05-17T10:22:31Z. The population grew from 8 336 817 to 8 804 190 between 2010
and 2020. Call stack depth 1024 exceeded at frame 0x7ffd5a3c. Phone support is closed on 25 December; call us after
27 December. Coordinates 48.8566, 2.3522 and 51.5074, -0.1278. Page 212 of 1 048 576 rows loaded in 0.35 s. The patch
fixes CVE-2024-3094 in xz 5.6.1. Totals: 1 234 567 890 items and 4 294 967 296 bytes. The API key must be kept secret:
store it in the keychain, not in the code. Set the token budget with --max-tokens 4096 and the secret key through the
environment. Password fields are masked as ********. Forgot your password? Reset it from the login page. Password:
must be at least 12 characters long. Password-protected PDF files are skipped. The empty file hashes to sha256
e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855. The header Authorization is required for the key
endpoint /v1/keys/rotate. ISBN 0-306-40615-2, UPC 036000291452, EAN 4006381333931, shipment 00340434161094042557.
See RFC 7231 section 6.5.1; port 5432; pid 48213; uid 1000. The meeting is 10:00-11:30 on 12.06.2024 in Berlin,
conference bridge code 8812. Invoice 2024/05/001234 of 15.05.2024, total 1.250,00 EUR. MAC 00:1A:2B:3C:4D:5E, IPv6
2001:db8::ff00:42:8329. The 2024 budget is 12 345 678 euros. Flight LH 2024 departs 07:45, seat 23A, booking code
X7K9QP. Call 911 or 112 in an emergency. Commit 9fceb02d0ae598e95dc970b74767f19372d61af8 was signed by the key
maintainer. Tracking: 9400 1000 0000 0000 0000 00. Ticket 415-555-0132 was closed. Order no. 020 7946 0958 shipped.""",
    """$ ls -l
total 48
-rw-r--r-- 1 ana staff  10754 May 17 10:22 README.md
drwxr-xr-x 6 ana staff   4096 May 17 10:20 src
-rwxr-xr-x 1 ana staff 183296 May 16 18:03 build.sh
$ ps aux | head -4
USER       PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND
root         1  0.0  0.1 167744 11452 ?        Ss   08:01   0:02 /sbin/init splash
ana      48213 12.4  3.2 2845120 262144 pts/1  Sl+  10:15   1:07 python -m http.server 8000
$ df -h /
Filesystem      Size  Used Avail Use% Mounted on
/dev/nvme0n1p2  468G  201G  244G  46% /
$ env | sort | head -5
HOME=/home/ana
LANG=en_GB.UTF-8
OLDPWD=/home/ana/src
PWD=/home/ana/src/app
SHELL=/bin/bash
$ ip -4 addr show wlp2s0
3: wlp2s0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000
    inet 192.168.1.23/24 brd 192.168.1.255 scope global dynamic noprefixroute wlp2s0
       valid_lft 84328sec preferred_lft 84328sec
$ pip list | grep -i num
numpy          2.1.3
numexpr        2.10.2
$ git log --oneline -3
a41f9e2 (HEAD -> main) pin the image library to 10.3.0
9c1e4b2 parser: keep the token position in error messages
3f2c9a1 docs: explain the password rules for the admin page
$ uptime
 10:31:07 up 2 days,  2:29,  3 users,  load average: 1.12, 0.98, 0.87
$ date -u +%s
1715941867
$ sha1sum dist/app-2.14.3.tar.gz
2fd4e1c67a2d28fced849ee1bb76e7391b93eb12  dist/app-2.14.3.tar.gz""",
    """def login(self, user, password=None):
    \"\"\"Log in; ask for the password when none is given.\"\"\"
    if password is None:
        password = getpass.getpass(f"Password for {user}: ")
    self.user, self.password = user, password
    digest = hmac.new(self.salt, password.encode("utf-8"), "sha256").hexdigest()
    pwd = os.getcwd()
    passwd = passwd + suffix
    userid = passwd = acct = ''
    pw = pw[:-1]
    return Decimal('+35236450.6').quantize(Decimal('0.01'))

This program is free software; you can redistribute it and/or modify it under the terms of the GNU General
Public License. You should have received a copy of the license along with this program; if not, write to the
Free Software Foundation, Inc., 51 Franklin Street, Fifth Floor, Boston, MA 02110-1301, USA. Use, duplication
or disclosure by the Government is subject to restrictions as set forth in Clause 252.227-7013 (c) (1) of the
Rights in Technical Data and Computer Software clause. Files under "src/plugins/preauth/spake/edwards25519.c"
carry their own notice. Sources: the binutils module in the project's old CVS repository. Get the
user name from the environment or the password database, and/or ask the user. The PWD request returns the
current directory.""",
)
