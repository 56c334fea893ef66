"""The desired-state file: TOML or JSON of one structure, defaults merged into each site, and a
bad file refused whole with one line per problem naming the site and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.plans.desired import DesiredStateError, load, parse

FILE = """
set = "agency-sites"
account = "agency"

[defaults]
timezone = "Europe/Berlin"
goals = [{ event = "Signup" }, { page = "checkout/success" }]
shared_links = ["Client dashboard"]

[[sites]]
domain = "https://www.Shop.Example.com/"
goals = [{ event = "Purchase", display_name = "Purchases" }, { event = "Signup", display_name = "Joined" }]

[[sites]]
domain = "blog.example.org"
timezone = "Etc/UTC"
inherit = false
shared_links = ["Team"]
"""


def test_a_toml_file_gives_each_site_the_defaults_it_inherits(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(FILE)
    state = load(path, accounts={"default", "agency"})
    assert (state.set, state.account) == ("agency-sites", "agency")
    shop, blog = state.sites
    assert shop.domain == "shop.example.com"
    assert shop.timezone == "Europe/Berlin"
    # The site's own Signup wins over the default's; the page path is normalised.
    assert [(g.natural_key, g.display_name) for g in shop.goals] == [
        ("event:Signup", "Joined"),
        ("page:/checkout/success", None),
        ("event:Purchase", "Purchases"),
    ]
    assert shop.shared_links == ("Client dashboard",)
    assert (blog.timezone, blog.goals, blog.shared_links) == ("Etc/UTC", (), ("Team",))
    assert state.site("blog.example.org") is blog


def test_json_of_the_same_structure_reads_the_same(tmp_path: Path) -> None:
    toml_path = tmp_path / "sites.toml"
    toml_path.write_text(FILE)
    import tomllib

    json_path = tmp_path / "sites.json"
    json_path.write_text(json.dumps(tomllib.loads(FILE)))
    assert load(json_path) == load(toml_path)


def problems_of(data: object) -> list[str]:
    with pytest.raises(DesiredStateError) as caught:
        parse(data, accounts={"default"})
    return caught.value.problems


def test_every_problem_is_one_line_naming_the_site_and_the_field() -> None:
    problems = problems_of(
        {
            "set": "agency sites",
            "account": "nobody",
            "defaults": {"timezone": "Mars/Olympus", "goals": [{"event": "engagement"}]},
            "sites": [
                {"domain": "ok.example.com", "goals": [{"page": "/x", "event": "X"}]},
                {"domain": "bad domain?.com"},
                {"domain": "ok.example.com"},
                {"domain": "c.example.com", "shared_links": ["", "WordPress - Shared Dashboard"]},
                {
                    "domain": "d.example.com",
                    "tracker_script_configuration": {"outbound_links": "yes"},
                    "colour": "red",
                    "guests": [{"email": "x@d.example.com", "role": "owner"}],
                    "custom_props": [""],
                },
                {
                    "domain": "e.example.com",
                    "goals": [
                        {"event": "A", "display_name": "Same"},
                        {"page": "/b", "display_name": "Same"},
                    ],
                },
            ],
        }
    )
    assert problems == [
        "set: required: a name of 1 to 64 letters, digits, '.', '_' or '-' (it names what this "
        "file owns)",
        "account: unknown account 'nobody'; configured: default",
        "defaults: timezone: 'Mars/Olympus' is not an IANA timezone",
        "defaults: goals[0].event: event name 'engagement' is reserved",
        "sites[0] ok.example.com: goals[0]: give exactly one of event and page",
        "sites[1]: domain: must not contain URI reserved characters :?#[]@!$&'()*+,;=",
        "sites[2] ok.example.com: domain: also that of sites[0]",
        "sites[3] c.example.com: shared_links[0]: must be a non-empty string",
        "sites[3] c.example.com: shared_links[1]: the name 'WordPress - Shared Dashboard' is "
        "reserved by Plausible",
        "sites[4] d.example.com: colour: unknown field; expected one of custom_props, domain, "
        "goals, guests, inherit, shared_links, timezone, tracker_script_configuration",
        "sites[4] d.example.com: tracker_script_configuration.outbound_links: must be true or "
        "false",
        "sites[4] d.example.com: custom_props[0]: a custom property must be a non-empty string",
        "sites[4] d.example.com: guests[0].role: unknown role 'owner'; expected 'viewer' or "
        "'editor'",
        "sites[5] e.example.com: goals: page:/b: display name 'Same' is also that of event:A; "
        "Plausible needs a distinct display_name per goal",
    ]


def test_a_file_that_does_not_parse_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text('set = "x"\n[[sites]\n')
    with pytest.raises(DesiredStateError) as caught:
        load(path)
    [line] = caught.value.problems
    assert line.startswith("not valid TOML: ")
    assert problems_of(["not", "a", "table"]) == ["the file must hold a table (a JSON object)"]
    assert problems_of({"set": "s", "sites": [{"domain": "a.com\x00"}]}) == [
        "sites[0].domain: sites[0].domain contains a NUL character"
    ]


def test_a_goal_takes_its_own_custom_props_checked_as_an_events_are(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(
        'set = "agency"\n'
        "[defaults]\n"
        'goals = [{ event = "Signup", custom_props = { plan = "free" } }, { page = "/thanks" }]\n'
        "[[sites]]\n"
        'domain = "a.example.com"\n'
        'goals = [{ event = "Signup", custom_props = { plan = "pro", tier = "2" } }]\n'
        "[[sites]]\n"
        'domain = "b.example.com"\n'
    )
    a, b = load(path).sites
    # The site's Signup wins over the default's, properties and all.
    assert [(g.natural_key, g.custom_props) for g in a.goals] == [
        ("event:Signup", {"plan": "pro", "tier": "2"}),
        ("page:/thanks", {}),
    ]
    assert [(g.natural_key, g.custom_props) for g in b.goals] == [
        ("event:Signup", {"plan": "free"}),
        ("page:/thanks", {}),
    ]


def test_each_bad_goal_custom_props_is_a_line_naming_the_site_and_the_goal() -> None:
    props = [
        {"plan": 1},
        {"a": "1", "b": "2", "c": "3", "d": "4"},
        {"k" * 301: "v"},
        {"plan": ""},
        ["plan"],
    ]
    problems = problems_of(
        {
            "set": "agency",
            "defaults": {"goals": [{"event": "Signup", "custom_props": "pro"}]},
            "sites": [
                {"domain": "b.example.com"},
                {
                    "domain": "a.example.com",
                    "inherit": False,
                    "goals": [{"page": f"/p{n}", "custom_props": p} for n, p in enumerate(props)],
                },
                {
                    "domain": "c.example.com",
                    "goals": [
                        {"event": "Buy", "custom_props": {"plan": "free"}, "display_name": "Free"},
                        {"event": "Buy", "custom_props": {"plan": "pro"}, "display_name": "Pro"},
                    ],
                },
            ],
        }
    )
    where = "sites[1] a.example.com: goals"
    assert problems == [
        "defaults: goals[0].custom_props: custom_props must map strings to strings",
        f"{where}[0].custom_props: custom_props must map strings to strings",
        f"{where}[1].custom_props: use at most 3 custom properties per goal",
        f"{where}[2].custom_props: custom property names are 1..300 characters",
        f"{where}[3].custom_props: custom property values are 1..2000 characters",
        f"{where}[4].custom_props: custom_props must map strings to strings",
        "sites[2] c.example.com: goals[1]: event:Buy is also goals[0]; one goal per event or "
        "page, its custom_props in one table",
    ]
