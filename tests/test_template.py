#!/usr/bin/python3
"""test_template.py — `radixserve template` against Python jinja2 rendering templates exactly as
transformers' apply_chat_template does (ImmutableSandboxedEnvironment(trim_blocks=True,
lstrip_blocks=True, extensions=[loopcontrols]), tojson = json.dumps(ensure_ascii=False, ...),
raise_exception, strftime_now, special_tokens_map + kwargs as variables).

Golden: jinja2 renders each request here, at test time; the C renderer must give the same bytes.
Covers the real Qwen3 template (>= 50 conversations), Llama-3 / Mistral / ChatML style
templates, a corpus of Jinja features and whitespace-control cases, the stories260K plain
fallback, and error handling (syntax errors, raise_exception, bad input, runaway templates).
Prints TAP.
"""
import json
import os
import random
import subprocess
import sys
from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.environ.get("RADIXSERVE_ROOT") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN", "bin/radixserve")
if not os.path.isabs(BIN):
    BIN = os.path.join(ROOT, BIN)
TMP = os.environ.get("RADIXSERVE_TMP") or os.path.join(ROOT, "build", "test-tmp")
QWEN = os.path.join(ROOT, "models", "qwen3-tokenizer")
STORIES = os.path.join(ROOT, "models", "stories260K")

n_checks = 0
n_failed = 0


def check(ok, what, diag=None):
    global n_checks, n_failed
    n_checks += 1
    print(("ok" if ok else "not ok") + " %d - %s" % (n_checks, what))
    if not ok:
        n_failed += 1
        if diag:
            for line in str(diag).splitlines()[:12]:
                print("#   " + line[:300])
    sys.stdout.flush()


# ---------------------------------------------------------------- the golden renderer


def _raise_exception(message):
    raise TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class GenerationTag(Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body."""
    tags = {"generation"}

    def parse(self, parser):
        next(parser.stream)
        return parser.parse_statements(["name:endgeneration"], drop_needle=True)


def golden_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def special_tokens_map(cfg):
    """What transformers' tokenizer.special_tokens_map gives the template: named tokens that are set."""
    out = {}
    for k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"):
        v = cfg.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if v is not None:
            out[k] = v
    if cfg.get("additional_special_tokens"):
        out["additional_special_tokens"] = cfg["additional_special_tokens"]
    return out


def join_parts(messages):
    """Our documented normalisation: text-part arrays become one string joined by newlines."""
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), list):
            m["content"] = "\n".join(p["text"] for p in m["content"])
        out.append(m)
    return out


def golden(template, cfg, req):
    env = golden_env()
    kwargs = dict(special_tokens_map(cfg))
    kwargs.update(req.get("chat_template_kwargs") or {})
    return env.from_string(template).render(
        messages=join_parts(req["messages"]), tools=req.get("tools"), documents=None,
        add_generation_prompt=req.get("add_generation_prompt", False), **kwargs)


def run_cli(model_dir, lines):
    """Feed request lines to `radixserve template`; returns (returncode, outputs, stderr)."""
    data = "".join(l + "\n" for l in lines).encode() if lines and isinstance(lines[0], str) \
        else b"".join(l + b"\n" for l in lines)
    p = subprocess.run([BIN, "template", "--model", model_dir], input=data, capture_output=True,
                       timeout=60)
    outs = []
    for raw in p.stdout.decode("utf-8", "replace").splitlines():
        try:
            outs.append(json.loads(raw))
        except ValueError:
            outs.append({"error": "unparseable output line: " + raw[:200]})
    return p.returncode, outs, p.stderr.decode("utf-8", "replace")


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "first difference at char %d:\n  want %r\n  got  %r" % (i, a[max(0, i - 40):i + 40], b[max(0, i - 40):i + 40])
    return "lengths differ: want %d, got %d; tail want %r got %r" % (len(a), len(b), a[-60:], b[-60:])


def compare_many(model_dir, template, cfg, reqs, label):
    rc, outs, err = run_cli(model_dir, [json.dumps(r, ensure_ascii=False) for r in reqs])
    if len(outs) != len(reqs):
        check(False, "%s: one output line per request (rc=%d)" % (label, rc), err)
        return
    for i, (r, got) in enumerate(zip(reqs, outs)):
        name = r.get("_name", "#%d" % i)
        try:
            want = golden(template, cfg, r)
        except TemplateError as e:
            ok = isinstance(got, dict) and str(e) in got.get("error", "")
            check(ok, "%s %s: template error reported like jinja2 (%s)" % (label, name, e), got)
            continue
        except Exception as e:  # TypeError and friends: the message may differ, the failure may not
            check(isinstance(got, dict), "%s %s: fails like jinja2 (%s)" % (label, name, e), got)
            continue
        if isinstance(got, dict):
            check(False, "%s %s: rendered" % (label, name), got)
        else:
            check(got == want, "%s %s: identical to jinja2 (%d bytes)" % (label, name, len(want)),
                  first_diff(want, got))


def model_dir_with(name, cfg):
    d = os.path.join(TMP, "template", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, ensure_ascii=False)
    return d


# ---------------------------------------------------------------- Qwen3 conversations

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string", "description": "City and state, e.g. San Francisco, CA"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}
SEARCH_TOOL = {"type": "function", "function": {
    "name": "search", "description": "Recherche sur le web — «guillemets» 日本語 \"quotes\" \\ back",
    "parameters": {"type": "object", "properties": {
        "query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        "score": {"type": "number", "default": 0.5}, "safe": {"type": "boolean", "default": True},
        "tags": {"type": "array", "items": {"type": "string"}}, "extra": {"type": "null"}},
        "required": ["query"]}}}


def sys_(c):
    return {"role": "system", "content": c}


def user(c):
    return {"role": "user", "content": c}


def asst(c, **kw):
    m = {"role": "assistant", "content": c}
    m.update(kw)
    return m


def tool(c):
    return {"role": "tool", "content": c}


def call(name, args):
    return {"id": "call_" + name, "type": "function", "function": {"name": name, "arguments": args}}


def qwen_conversations():
    base = [
        ("single user", [user("Hello!")]),
        ("system+user", [sys_("You are a helpful assistant."), user("What is 2+2?")]),
        ("multi-turn", [sys_("Be brief."), user("Hi"), asst("Hello! How can I help?"), user("Tell me a joke.")]),
        ("assistant last", [user("Hi"), asst("Hello there")]),
        ("reasoning_content history", [user("Q1"), asst("A1", reasoning_content="thinking about Q1"), user("Q2")]),
        ("reasoning_content last turn", [user("Q1"), asst("A1", reasoning_content="\nthink\n\n")]),
        ("think in content history", [user("Q1"), asst("<think>\nplan\n</think>\n\nAnswer 1"), user("Q2"), asst("<think>x</think>Answer 2")]),
        ("think in content after last query", [user("Q"), asst("<think>\nreason here\n</think>\n\nFinal")]),
        ("think without open tag", [user("Q"), asst("only reasoning</think>\n\nafter")]),
        ("multiple think blocks", [user("Q"), asst("<think>a</think>mid<think>b</think>\nend")]),
        ("empty contents", [sys_(""), user(""), asst(""), user("")]),
        ("unicode and emoji", [user("明月几时有，把酒问青天 👨‍👩‍👧‍👦 café naïve Ελληνικά עברית"), asst("🙂 ok — «fine»"), user("日本語でお願いします")]),
        ("special characters", [user("quote \" backslash \\ tab \t newline \n cr \r bell \u0007 nul-ish \u0001"), asst("{{ not jinja }} {% raw %}"), user("<|im_start|> literal")]),
        ("multiple system messages", [sys_("First system."), user("u1"), sys_("Second system mid-conversation."), asst("a1"), user("u2")]),
        ("tools no system", [user("Weather in Paris?")], [WEATHER_TOOL]),
        ("tools with system", [sys_("You can use tools."), user("Weather in Paris?")], [WEATHER_TOOL, SEARCH_TOOL]),
        ("tool call dict args", [user("Weather in Paris?"), asst("", tool_calls=[call("get_weather", {"location": "Paris, FR", "unit": "celsius"})]),
                                 tool('{"temp": 21, "sky": "clear"}'), user("Thanks. And Rome?")], [WEATHER_TOOL]),
        ("tool call string args", [user("Weather?"), asst("Let me check.", tool_calls=[call("get_weather", '{"location": "Oslo"}')]),
                                   tool("cold"), asst("It is cold in Oslo.")], [WEATHER_TOOL]),
        ("parallel tool calls", [user("Paris and Rome?"), asst("", tool_calls=[call("get_weather", {"location": "Paris"}), call("get_weather", {"location": "Rome"})]),
                                 tool("sunny"), tool("rainy")], [WEATHER_TOOL]),
        ("tool call nested args", [user("search"), asst("Searching.", tool_calls=[call("search", {"query": "ñandú 鳥", "limit": 5, "score": 0.25, "safe": False, "tags": ["a", "b"], "extra": None, "nested": {"k": [1, {"z": -3.5e-07}]}})]),
                                   tool("[]")], [SEARCH_TOOL]),
        ("tool call without function wrapper", [user("x"), asst("", tool_calls=[{"name": "get_weather", "arguments": {"location": "Lima"}}]), tool("warm")], [WEATHER_TOOL]),
        ("multi-step tool (last query before tools)", [user("Plan a trip"), asst("<think>need weather</think>Checking.", tool_calls=[call("get_weather", {"location": "Kyoto"})]),
                                                      tool("mild"), asst("<think>now search</think>Searching.", tool_calls=[call("search", {"query": "Kyoto hotels"})]),
                                                      tool("<results/>")], [WEATHER_TOOL, SEARCH_TOOL]),
        ("user tool_response lookalike", [user("Q"), asst("A"), user("<tool_response>\nfake\n</tool_response>")]),
        ("tool message first", [tool("orphan result"), user("continue")]),
        ("reasoning after tool", [user("Q"), asst("", reasoning_content="r1", tool_calls=[call("get_weather", {"location": "X"})]), tool("ok"), asst("done", reasoning_content="r2")], [WEATHER_TOOL]),
        ("content parts", [{"role": "system", "content": [{"type": "text", "text": "sys part"}]},
                           {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}]),
        ("long conversation", [sys_("S")] + [m for i in range(12) for m in (user("question %d" % i), asst("answer %d" % i))] + [user("last")]),
        ("null content with tool calls", [user("w?"), {"role": "assistant", "content": None, "tool_calls": [call("get_weather", {"location": "Bern"})]},
                                          tool("ok"), {"role": "assistant", "content": None, "reasoning_content": None}], [WEATHER_TOOL]),
        ("missing content", [user("a"), {"role": "assistant"}, user("b")]),
        ("whitespace heavy", [user("  leading and trailing  \n\n"), asst("\n\n<think>\n\n  spaced  \n\n</think>\n\n\n  body  \n"), user("\t")]),
    ]
    reqs = []
    for name, msgs, *rest in base:
        tools = rest[0] if rest else None
        for agp in (True, False):
            r = {"_name": "%s (agp=%s)" % (name, agp), "messages": msgs, "add_generation_prompt": agp}
            if tools:
                r["tools"] = tools
            reqs.append(r)
        r = {"_name": "%s (enable_thinking=false)" % name, "messages": msgs,
             "add_generation_prompt": True, "chat_template_kwargs": {"enable_thinking": False}}
        if tools:
            r["tools"] = tools
        reqs.append(r)
    reqs.append({"_name": "enable_thinking=true", "messages": [user("x")], "add_generation_prompt": True,
                 "chat_template_kwargs": {"enable_thinking": True}})
    reqs.append({"_name": "tools empty list", "messages": [user("x")], "tools": [], "add_generation_prompt": True})
    return reqs


# ---------------------------------------------------------------- other templates

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
          "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
          "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
           "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
           "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")
# A multi-line, indented template in the style of Llama-3.1 / Hermes tool templates.
TOOLS_STYLE = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in loop_messages %}
    {%- if message.role in ['user', 'assistant'] and not message.tool_calls %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- for tc in message.tool_calls %}
            {%- set f = tc.function if tc.function is defined else tc %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + f.name + '", "parameters": ' + f.arguments | tojson(sort_keys=true, separators=(",", ":")) + '}' }}
            {{- "<|eot_id|>" }}
        {%- endfor %}
    {%- elif message.role == "tool" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable and message.content is not string %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Jinja features and whitespace control, each checked against jinja2 (vars come from kwargs).
FEATURES = [
    "{% for x in xs %}\n  {{ x }}\n{% endfor %}\n",
    "  {% if true %}\n    yes\n  {% endif %}\n  after\n",
    "a  {%- if true -%}  b  {%- endif -%}  c\n\n",
    "line1\n    {%+ if true %}kept indent{% endif %}\n",
    "x {# comment #} y\n  {# own line comment #}\nz",
    "{% raw %}{{ not evaluated }} {% if %}{% endraw %}\n after raw",
    "{{ 'a' }}\n{{ 'b' }}\n\n",
    "text\r\nwith\rcarriage\r\n{% if true %}\r\nreturns{% endif %}\r\n",
    "{%- for k, v in d.items() -%}\n{{ k }}={{ v }};\n{%- endfor %}",
    "{{ xs|length }} {{ xs|first }} {{ xs|last }} {{ xs|join(', ') }} {{ xs|reverse|list }} {{ xs[1:] }} {{ xs[::-2] }} {{ xs[-1] }}",
    "{{ s.upper() }}|{{ s.lower() }}|{{ s.title() }}|{{ s.capitalize() }}|{{ s.replace('o', '0') }}|{{ s.startswith('He') }}|{{ s.endswith(('x', 'd!')) }}|{{ s.find('o') }}|{{ s.count('l') }}",
    "{{ s.split() }} {{ s.split('o', 1) }} {{ ' x '.lstrip() }}| {{ 'xxaxx'.strip('x') }} {{ '--a--'.rstrip('-') }} {{ ','.join(['a', 'b']) }}",
    "{{ '%s-%s'|format('a', 2) }} {{ ['a', 'b']|map('replace', 'a', 'z')|list }} {{ users|selectattr('admin', 'sameas', true)|map(attribute='name')|list }} {{ users|map(attribute='zz', default='d')|list }} {{ users|join(', ', attribute='name') }} {{ xs|select('greaterthan', 1)|list }} {{ xs|reject('in', [1, 2])|list }} {{ xs|min }} {{ xs|max }} {{ d|dictsort(by='value', reverse=true) if false }}",
    "{{ 0x1F }} {{ 0o17 }} {{ 0b101 }} {{ 2 * 3 ~ 4 }} {{ 1 in [1] == true }} {{ 'a' < 'b' < 'c' }} {{ [1] + [2] }} {{ (1,) + (2,) }}",
    "{{ 1 + 2 * 3 - 4 / 2 }} {{ 2 ** 3 ** 2 }} {{ 17 // 5 }} {{ 17 % 5 }} {{ -17 // 5 }} {{ 3.0 * 2 }} {{ 1e3 }} {{ 1_000 }} {{ 10 / 4 }}",
    "{{ 1 < 2 < 3 }} {{ 3 > 2 > 5 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ none == none }} {{ [1, 2] == [1, 2] }} {{ 'b' not in 'abc' }} {{ not 0 }}",
    "{{ 0 or 'x' }} {{ 1 and 'y' }} {{ '' or none }} {{ 'yes' if xs else 'no' }} {{ 'a' if false }}|{{ 'p' ~ 1 ~ 2.5 ~ true ~ none }}",
    "{{ d|tojson }} {{ d|tojson(indent=2) }} {{ xs|tojson }} {{ 'é\"\\n'|tojson }} {{ d|tojson(sort_keys=true) }} {{ [1.0, 0.1, 1e20, -0.0]|tojson }}",
    "{{ d }} {{ xs }} {{ (1, 'a') }} {{ s[0] }} {{ d['a'] }} {{ d.a }} {{ d.get('zz', 'default') }} {{ d.keys()|list }} {{ d.values()|list }}",
    "{% set ns = namespace(n=0, items=[]) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% set ns.items = ns.items + [x * 2] %}{% endfor %}{{ ns.n }} {{ ns.items }}",
    "{% for x in xs %}{% if x == 2 %}{% continue %}{% endif %}{% if x > 3 %}{% break %}{% endif %}{{ x }}{% endfor %}",
    "{% for x in xs if x is odd %}{{ loop.index }}/{{ loop.length }}:{{ x }}{{ ',' if not loop.last }}{% else %}none{% endfor %}|{% for x in [] %}{{ x }}{% else %}empty{% endfor %}",
    "{% for x in xs %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.cycle('a', 'b') }}{{ loop.previtem is defined }} {% endfor %}",
    "{% for a in [[1, 2], [3]] %}{% for b in a %}{{ loop.depth }}{{ b }}{% endfor %}{% endfor %}",
    "{% macro greet(name, punct='!') %}Hello {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', '?') }} {{ greet(name='C', punct='.') }}",
    "{% set block %}\n  inner {{ s }}\n{% endset %}[{{ block }}]{% set a, b = 1, 2 %}{{ a + b }}",
    "{{ undefined_thing is defined }} {{ undefined_thing|default('dflt') }} {{ ''|default('e', true) }} {{ undefined_thing }}|{{ d.missing is defined }} {{ none is none }}",
    "{{ 1 is integer }} {{ 1.5 is float }} {{ 'x' is string }} {{ d is mapping }} {{ xs is iterable }} {{ xs is sequence }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 1 is number }} {{ true is boolean }} {{ xs is not string }}",
    "{{ xs|map('string')|join('|') }} {{ users|map(attribute='name')|join(',') }} {{ users|selectattr('admin')|map(attribute='name')|list }} {{ users|rejectattr('admin')|list|length }} {{ xs|select('odd')|list }} {{ xs|reject('even')|list }}",
    "{{ users|sort(attribute='name')|map(attribute='name')|list }} {{ ['b', 'A', 'c']|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ d|dictsort }} {{ [1, 2, 1, 3]|unique|list }} {{ xs|sum }} {{ d|items|list }}",
    "{{ '  x  '|trim }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello world'|title }}|{{ 'hello'|capitalize }}|{{ 'a-b'|replace('-', '+') }}|{{ 42|string }}|{{ '3'|int + 1 }}|{{ '2.5'|float }}|{{ -3|abs }}|{{ 2.567|round(1) }}",
    "{{ 'line1\\nline2\\n\\nline4'|indent(2) }}|{{ 'a\\nb'|indent(4, true) }}|{{ '<a href=\"x\">'|e }}",
    "{{ range(3)|list }} {{ range(1, 10, 3)|list }} {{ range(5, 0, -2)|list }} {{ dict(a=1, b=2) }} {{ 'abc'|list }}",
    "{{ \"double\" 'single' \"concat\" }} {{ '\\u00e9\\x41\\t|' }} {{ 'it\\'s' }} {{ \"tab\\there\" }} {{ '\\\\' }}",
    "{% if xs|length > 2 and d.a == 1 or false %}A{% elif true %}B{% else %}C{% endif %}{% if not xs %}D{% elif xs[0] == 1 %}E{% endif %}",
    "{{ (xs|length - 1) * 2 }} {{ -xs|length }} {{ -(xs|length) }} {{ xs|length is odd }} {{ s[1:3]|upper }} {{ [1, 2][1] }} {{ {'k': 'v'}['k'] }}",
    "{% filter upper %}shout {{ s }}{% endfilter %} {% generation %}gen{% endgeneration %}",
    "{{ xs[10] is defined }} {{ d['nope'] is defined }} {{ s[100] is defined }} {{ none.attr is defined }}",
    "{{ 1e16 }} {{ 1e15 }} {{ 123456789.123 }} {{ 0.0001 }} {{ 0.00001 }} {{ 1/3 }} {{ 2/3 }} {{ 1e-300 * 1e-300 }} {{ 1.5e300 * 1e300 }} {{ -0.0 }}",
    "{{ '%s-%d|%5.2f|%-4s|%03d|%x|%r|%%' % ('a', 3, 3.14159, 'ab', 7, 255, 'q') }} {{ 'v=%s' % xs }}",
    "{% set a = 0 %}{% for i in xs %}{% if loop.first %}{% set a = 5 %}{% endif %}{{ a }}{% endfor %}{{ a }}|{% for i in xs %}{% if loop.first %}{% set b = 5 %}{% endif %}{{ b }}{% endfor %}|{{ b }}",
    "{% macro outer(n) %}{% if n > 0 %}({{ outer(n - 1) }}){% else %}{{ s }}{% endif %}{% endmacro %}{{ outer(3) }}",
    "a{#-",
    "text {% raw -%}  ",
    "  {% for x in xs %}\n    {% if x is odd %}\n      odd {{ x }}\n    {% else %}\n      even {{ x }}\n    {% endif %}\n  {% endfor %}\n",
]
FEATURE_VARS = {"xs": [1, 2, 3, 4, 5], "s": "Hello World!", "d": {"a": 1, "b": "two", "c": [True, None]},
                "users": [{"name": "zoe", "admin": True}, {"name": "Al", "admin": False}, {"name": "bo", "admin": True}]}


def test_features():
    cfg = {"chat_template": "placeholder"}
    for i, src in enumerate(FEATURES):
        d = model_dir_with("feature%02d" % i, {"chat_template": src})
        req = {"_name": "feature %d" % i, "messages": [user("x")], "chat_template_kwargs": FEATURE_VARS}
        compare_many(d, src, cfg, [req], "jinja")


def random_template(rng, depth=0):
    """Text, tags and comments with every whitespace-control marker, nested if/for blocks."""
    texts = [" ", "  ", "\n", "\n\n", "  \n", "\n  ", "\t", "a", "b c", " x \n  ", "\r\n", "\u3000", "\n\t "]

    def tag(body):
        return "{%" + rng.choice(["", "-", "+"]) + " " + body + " " + rng.choice(["", "-", "+"]) + "%}"

    out = []
    for _ in range(rng.randint(1, 5)):
        r = rng.random()
        out.append(rng.choice(texts))
        if r < 0.25:
            out.append("{{" + rng.choice(["", "-"]) + rng.choice([" x ", " 'v' ", " 1 "]) + rng.choice(["", "-"]) + "}}")
        elif r < 0.35:
            out.append("{#" + rng.choice(["", "-", "+"]) + " c " + rng.choice(["", "-", "+"]) + "#}")
        elif r < 0.6 and depth < 3:
            out += [tag("if x"), random_template(rng, depth + 1)]
            if rng.random() < 0.5:
                out += [tag("else"), random_template(rng, depth + 1)]
            out.append(tag("endif"))
        elif r < 0.8 and depth < 3:
            out += [tag("for i in xs"), random_template(rng, depth + 1), tag("endfor")]
        elif r < 0.9:
            out.append(tag("set y = 2"))
    return "".join(out)


def test_random_whitespace(count=150):
    """jinja2's trim_blocks / lstrip_blocks / -+ markers over random templates: zero differences."""
    rng = random.Random(20261125)
    req = {"messages": [user("x")], "chat_template_kwargs": {"xs": [1, 2], "x": True}}
    diffs = []
    for i in range(count):
        src = random_template(rng) + rng.choice(["", "\n", "\n\n"])
        want = golden(src, {}, req)
        rc, outs, err = run_cli(model_dir_with("random", {"chat_template": src}), [json.dumps(req)])
        if outs != [want]:
            diffs.append("%r: want %r got %r" % (src[:120], want[:80], (outs or [err])[0]))
    check(not diffs, "%d random whitespace-control templates identical to jinja2" % count, "\n".join(diffs[:3]))


def test_other_templates():
    convs = [
        {"_name": "basic", "messages": [user("Hi"), asst("Hello"), user("How are you?")], "add_generation_prompt": True},
        {"_name": "system", "messages": [sys_("  Be nice.  "), user("Hi")], "add_generation_prompt": False},
        {"_name": "unicode", "messages": [user("héllo 世界 🙂")], "add_generation_prompt": True},
    ]
    for name, src in (("chatml", CHATML), ("llama3", LLAMA3)):
        cfg = {"chat_template": src, "bos_token": "<|begin_of_text|>", "eos_token": {"content": "<|eot_id|>"}}
        compare_many(model_dir_with(name, cfg), src, cfg, convs, name)
    cfg = {"chat_template": MISTRAL, "bos_token": "<s>", "eos_token": "</s>"}
    mistral = convs[:1] + [
        {"_name": "bad alternation (raise_exception)", "messages": [user("a"), user("b")]},
        {"_name": "system role rejected (raise_exception)", "messages": [sys_("s"), user("a")]},
    ]
    compare_many(model_dir_with("mistral", cfg), MISTRAL, cfg, mistral, "mistral")
    cfg = {"chat_template": [{"name": "tool_use", "template": "WRONG"}, {"name": "default", "template": TOOLS_STYLE}],
           "bos_token": "<|begin_of_text|>"}
    tool_convs = [
        {"_name": "tools", "messages": [sys_("sys"), user("Weather?"), asst("", tool_calls=[call("get_weather", {"unit": "c", "location": "Paris"})]),
                                        tool({"temp": 20}), tool("plain")], "tools": [WEATHER_TOOL], "add_generation_prompt": True},
        {"_name": "no tools", "messages": [user("Hi")]},
    ]
    compare_many(model_dir_with("toolstyle", cfg), TOOLS_STYLE, cfg, tool_convs, "list-of-templates")


def test_qwen():
    with open(os.path.join(QWEN, "tokenizer_config.json")) as f:
        cfg = json.load(f)
    reqs = qwen_conversations()
    compare_many(QWEN, cfg["chat_template"], cfg, reqs, "qwen3")
    return len(reqs)


def test_plain_fallback():
    reqs = [{"messages": [user("Once upon a time")], "add_generation_prompt": True},
            {"messages": [sys_("sys"), user("u"), asst("a"), {"role": "user"}, user([{"type": "text", "text": "p1"}, {"type": "text", "text": "p2"}])]}]
    rc, outs, err = run_cli(STORIES, [json.dumps(r) for r in reqs])
    check(rc == 0 and outs == ["<s>Once upon a time", "<s>sys\nu\na\n\np1\np2"],
          "stories260K (no chat_template): BOS text + contents joined by newlines", (rc, outs, err))


def test_errors():
    # syntax errors: a clear message naming the line, exit 1, no crash
    bad = {"unclosed": "{% for x in xs %}{{ x }}", "bad expr": "line one\n{{ 1 + }}", "unknown tag": "{% frobnicate %}",
           "unterminated": "{{ 'abc }}", "stray end": "{% endif %}", "mismatched": "{{ (1, 2] }}"}
    for name, src in bad.items():
        d = model_dir_with("bad-" + name.replace(" ", "-"), {"chat_template": src})
        rc, outs, err = run_cli(d, ['{"messages":[{"role":"user","content":"x"}]}'])
        try:
            golden_env().from_string(src)
            jinja_rejects = False
        except TemplateError:
            jinja_rejects = True
        check(jinja_rejects and rc == 1 and "syntax error" in err and "line" in err and not outs,
              "syntax error (%s) is a clear load error: %s" % (name, err.strip()[:100]), (rc, outs, err))
    # runtime errors: an error line per bad request, the others still rendered, exit 1
    runaway = {"huge range": "{% for i in range(1000000000) %}x{% endfor %}",
               "recursive macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
               "deep nesting": "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}",
               "undefined attribute": "{{ nothing.attr }}",
               "type error": "{{ 1 + 'a' }}",
               "memory bomb": "{% set ns = namespace(s='xxxxxxxxxxxxxxxx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
               "output bomb": "{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}"}
    for name, src in runaway.items():
        d = model_dir_with("rt-" + name.replace(" ", "-"), {"chat_template": src})
        rc, outs, err = run_cli(d, ['{"messages":[{"role":"user","content":"x"}]}'])
        ok = rc in (0, 1) and (rc == 1) == bool(err and "syntax" in err or (outs and isinstance(outs[0], dict)))
        check(ok and rc == 1, "runaway/invalid template (%s) ends with an error, no crash: %s" %
              (name, (err.strip() or json.dumps(outs)[:120])[:120]), (rc, outs, err))
    lines = [b'{"messages":[{"role":"user","content":"ok"}]}', b"not json", b'{"messages":"x"}',
             b'{"messages":[{"role":"user","content":"\xff\xfe"}]}', b'{"messages":[]}',
             b'{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}',
             b'{"messages":[{"role":"user","content":"x"}],"tools":5}', b'[1,2]']
    rc, outs, err = run_cli(QWEN, lines)
    errs = [isinstance(o, dict) and "error" in o for o in outs]
    check(rc == 1 and len(outs) == len(lines) and errs == [False] + [True] * (len(lines) - 1),
          "bad request lines give one error object each, good lines still render, exit 1", (rc, outs, err))
    check(any("image_url" in o.get("error", "") for o in outs if isinstance(o, dict)),
          "a non-text content part is rejected naming its type", outs)
    p = subprocess.run([BIN, "template", "--model", os.path.join(TMP, "no-such-model")], input=b"", capture_output=True)
    check(p.returncode == 1 and b"tokenizer_config.json" in p.stderr, "missing model dir: exit 1 naming the file", p.stderr)
    p = subprocess.run([BIN, "template"], input=b"", capture_output=True)
    check(p.returncode == 2, "no --model: usage, exit 2", p.stderr)


def main():
    if not os.path.exists(BIN):
        print("not ok 1 - binary %s exists" % BIN)
        print("1..1")
        return 1
    n = test_qwen()
    check(n >= 50, "at least 50 Qwen3 conversations compared (%d)" % n)
    test_other_templates()
    test_features()
    test_random_whitespace()
    test_plain_fallback()
    test_errors()
    print("1..%d" % n_checks)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
