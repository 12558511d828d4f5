#!/usr/bin/env python3
"""The dashboard in headless Chromium during a `cityops demo` run (see tests/CMakeLists.txt).

Starts `cityops demo` (typhoon scenario, accelerated) in a temporary directory, opens the
dashboard address it prints in Debian's chromium (driven by chromedriver through
python3-selenium) and checks in the DOM that:
  * the token left the address bar and the signed-in user is shown; no API error is shown;
  * the counters show cases, and the map has drawn every device (data-points);
  * the case board shows at least one case with a yellow light;
  * the department league is filled: a row per department with open, yellow, red, on-time
    close rate and mean handling time, departments the API's ?by=department names, rated
    rows worst on-time close rate first;
  * the device kinds' legend lists every kind of the catalogue (GET /api/v1/catalogue) by its
    names, with counts adding up to the map's devices; clicking a kind lists its devices
    with a column per catalogue metric (label and unit) and their last values;
  * clicking a yellow-lit case opens its timeline, the same events the API returns for it,
    with the overdue event that lit it, and the time spent in each stage;
  * the browser logged no JavaScript error and no Content-Security-Policy violation;
  * no request URL of the page, and no request line in the daemon's log, carries the token;
  * the dashboard's files, the API (answers and errors) and /healthz send the security
    headers (Content-Security-Policy without 'unsafe-inline', nosniff, no-referrer, DENY) and
    API answers `Cache-Control: no-store`.
Then it stops the demo with SIGINT and expects exit code 0. Screenshots go to
<artifacts>/dashboard.png (the big screen) and dashboard-case.png (a case's timeline); the
demo's log to dashboard-demo.log.
"""
import argparse
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.parse


def ensure_selenium():
    """Debian's python3-selenium lives in /usr/bin/python3's path; a python3 of pyenv or a
    venv first on PATH does not see it, so run again under Debian's interpreter."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        debian = '/usr/bin/python3'
        if os.path.exists(debian) and os.path.realpath(sys.executable) != os.path.realpath(debian):
            os.execv(debian, [debian] + sys.argv)
        sys.exit('dashboard_test: needs Debian\'s python3-selenium (apt-get install python3-selenium '
                 'chromium chromium-driver)')


ensure_selenium()
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'testing'))
import api_client  # noqa: E402
from demo_process import DemoProcess, Failure, poll  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

CHROMIUM = '/usr/bin/chromium'
CHROMEDRIVER = '/usr/bin/chromedriver'
DEVICES = 2000
# Simulated seconds per wall second: elevator entrapments (30 min to handle) and the
# typhoon's floods light yellow within a minute of wall time at this pace.
ACCELERATION = 300
READY_TIMEOUT = 90    # s for the demo to print "ready"
PAGE_TIMEOUT = 240    # s for counters, map and a yellow light to appear
STOP_TIMEOUT = 60     # s for the demo to exit after SIGINT

START = time.monotonic()


def log(msg):
    print(f'[{time.monotonic() - START:6.1f}s] {msg}', flush=True)


def start_browser(workdir):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                '--disable-quic', '--no-first-run', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', '--window-size=1920,1080',
                '--user-data-dir=' + os.path.join(workdir, 'chromium')]:
        options.add_argument(arg)
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # The big screen's own size, whatever the headless window's decorations take.
    driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride',
                           {'width': 1920, 'height': 1080, 'deviceScaleFactor': 1, 'mobile': False})
    # Every Content-Security-Policy violation of every page, whatever the console logs.
    driver.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument', {'source': CSP_WATCH_JS})
    return driver


CSP_WATCH_JS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) =>
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'} ` +
                              `(${e.sourceFile}:${e.lineNumber})`));
"""

# Every answer of the daemon carries these (api/README.md#security-headers).
SECURITY_HEADERS = {
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
}


def check_security_headers(base, token):
    """The dashboard's files, the API, its errors and the health endpoints send the security
    headers and a Content-Security-Policy without 'unsafe-inline'; API answers are not
    cached."""
    for path, auth, cache in [('/', False, 'no-cache'), ('/app.js', False, 'no-cache'),
                              ('/style.css', False, 'no-cache'), ('/healthz', False, 'no-store'),
                              ('/api/v1/whoami', True, 'no-store'),
                              ('/api/v1/whoami', False, 'no-store'), ('/no-such-page', False, None)]:
        status, headers, _ = api_client.request(base, path, token=token if auth else None)
        problems = [f'{name}: {headers.get(name)!r}, expected {want!r}'
                    for name, want in SECURITY_HEADERS.items() if headers.get(name) != want]
        csp = headers.get('Content-Security-Policy') or ''
        for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'",
                          "frame-ancestors 'none'"):
            if directive not in csp:
                problems.append(f'Content-Security-Policy {csp!r} lacks {directive!r}')
        if 'unsafe-inline' in csp or 'unsafe-eval' in csp:
            problems.append(f'Content-Security-Policy {csp!r} allows unsafe-*')
        if cache and headers.get('Cache-Control') != cache:
            problems.append(f'Cache-Control: {headers.get("Cache-Control")!r}, expected {cache!r}')
        if problems:
            raise Failure(f'GET {path} ({status}):\n    ' + '\n    '.join(problems))
    log('security headers and Content-Security-Policy on the dashboard, the API and errors')


def check_no_token_in_urls(driver, demo, token):
    """No request the page made, and no request line the daemon logged, carries the token.
    (The navigation entry keeps the address as opened, fragment and all: the fragment is
    never sent, so only what precedes '#' counts.)"""
    urls = driver.execute_script(
        "return performance.getEntries().map((e) => e.name).concat([location.href]);")
    leaked = [u for u in urls if token in u.split('#')[0] or 'token=' in u.split('#')[0]]
    if leaked:
        raise Failure('request URLs carry the token:\n    ' + '\n    '.join(leaked))
    with open(demo.log_path) as f:
        logged = [line for line in f if 'http: ' in line and token in line]
    if logged:
        raise Failure('the daemon logged the token:\n    ' + '    '.join(logged))
    log(f'{len(urls)} request URLs of the page, none carries the token; nor does the daemon log')


SNAPSHOT_JS = """
const text = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
const errors = document.getElementById('errors');
const map = document.getElementById('map');
return {
  url: location.href,
  whoami: text('whoami'),
  live: document.getElementById('live') ? document.getElementById('live').className : null,
  casesTotal: text('counter-cases-total'),
  yellowCounter: text('counter-yellow'),
  redCounter: text('counter-red'),
  alerts: text('counter-alerts-active'),
  devices: text('counter-devices-online') + ' / ' + text('counter-devices-total'),
  tickets: text('counter-tickets'),
  mapPoints: map ? map.dataset.points : null,
  rows: document.querySelectorAll('.case-row').length,
  yellowRows: document.querySelectorAll('.case-row .light-yellow').length,
  redRows: document.querySelectorAll('.case-row .light-red').length,
  ticketRows: document.querySelectorAll('#tickets li').length,
  leagueRows: document.querySelectorAll('#league-rows .league-row').length,
  errors: errors && !errors.hidden ? errors.innerText : '',
  tokenPrompt: !document.getElementById('token-prompt').hidden,
};
"""


def number(text):
    try:
        return int(re.sub(r'[^0-9]', '', text or '') or '0')
    except ValueError:
        return 0


def describe(snap):
    return '\n'.join(f'    {k}: {v!r}' for k, v in snap.items())


def check_bad_token(driver, base):
    """No token: a token is asked for. A token the daemon does not know: the API's refusal is
    shown and a token is asked for."""
    driver.get(base)
    snap = driver.execute_script(SNAPSHOT_JS)
    if not snap['tokenPrompt'] or snap['errors']:
        raise Failure('without a token expected the token prompt and no error; the page showed:\n' +
                      describe(snap))
    driver.get(base + '#token=not-a-token')
    last = {}

    def refused():
        snap = last['snap'] = driver.execute_script(SNAPSHOT_JS)
        return snap['tokenPrompt'] and 'UNAUTHENTICATED' in snap['errors']

    if not poll(refused, 30, 0.5):
        raise Failure('with an unknown token expected the token prompt and the API\'s UNAUTHENTICATED '
                      'error shown; the page showed:\n' + describe(last.get('snap', {})))
    log('with an unknown token the page shows: ' + ' '.join(last['snap']['errors'].split()))
    # The browser logs the refused requests themselves (401); anything else is a failure.
    errors = [e for e in browser_errors(driver.get_log('browser')) if ' 401 ' not in e['message']]
    if errors:
        raise Failure('the browser logged errors with an unknown token:\n' +
                      '\n'.join(f'    {e["message"]}' for e in errors))


def wait_for_big_screen(driver):
    """Waits until counters, map and a yellow light show; returns the last snapshot."""
    seen, last = set(), {}

    def shown():
        snap = last['snap'] = driver.execute_script(SNAPSHOT_JS)
        if snap['errors']:
            raise Failure('the dashboard shows an API error:\n' + describe(snap))
        if snap['tokenPrompt']:
            raise Failure('the dashboard asks for a token although the URL carried one:\n' + describe(snap))
        for name, ok in [('cases', number(snap['casesTotal']) > 0),
                         ('map', number(snap['mapPoints']) > 0),
                         ('yellow light', snap['yellowRows'] > 0)]:
            if ok and name not in seen:
                seen.add(name)
                log(f'page shows {name}: cases {snap["casesTotal"]}, map points {snap["mapPoints"]}, '
                    f'rows {snap["rows"]} ({snap["yellowRows"]} yellow, {snap["redRows"]} red)')
        return len(seen) == 3

    if poll(shown, PAGE_TIMEOUT, 1):
        return last['snap']
    snap = last.get('snap', {})
    raise Failure(f'within {PAGE_TIMEOUT} s expected nonzero cases in #counter-cases-total, '
                  'a drawn map (#map data-points > 0) and a .case-row with a .light-yellow; '
                  'the page showed:\n' + describe(snap))


LEAGUE_JS = """
return {
  info: document.getElementById('league-info').textContent.trim(),
  rows: [...document.querySelectorAll('#league-rows .league-row')].map((r) => ({
    department: r.dataset.department,
    cells: [...r.querySelectorAll('td')].map((td) => td.textContent.trim()),
  })),
};
"""


def league_problem(league, base, token):
    """What is wrong with the department league as shown, or None."""
    rows = [r for r in league['rows'] if r['department']]
    api = api_get(base, token, '/api/v1/statistics?by=department').get('evaluation', {})
    known = {g['key'] for g in api.get('groups', [])}
    if not rows:
        return 'no department rows in #league-rows'
    if any(len(r['cells']) != 7 or any(c == '' for c in r['cells'][1:]) for r in rows):
        return 'a row with an empty cell (expected rank, department, open, yellow, red, rate, time)'
    if any(r['department'] not in known for r in rows):
        return 'a department the API does not name: ' + ', '.join(
            r['department'] for r in rows if r['department'] not in known)
    if sum(number(r['cells'][2]) for r in rows) == 0:
        return 'no open case in any department'
    if 'since' not in league['info']:
        return 'no period in #league-info'
    rates = [float(r['cells'][5].rstrip('%')) for r in rows if r['cells'][5].endswith('%')]
    if rates != sorted(rates):
        return f'rated rows not worst first: {rates}'
    if not rates:
        return 'no department has closed a case yet (no on-time rate)'
    return None


def check_league(driver, base, token):
    """The department league is there and filled, worst on-time close rate first."""
    state = {'league': {}, 'problem': 'no rows'}

    def settled():
        state['league'] = driver.execute_script(LEAGUE_JS)
        state['problem'] = league_problem(state['league'], base, token)
        return state['problem'] is None

    if poll(settled, 120, 2):
        league = state['league']
        rows = [r for r in league['rows'] if r['department']]
        log(f'league: {len(rows)} departments, worst {rows[0]["department"]} '
            f'({rows[0]["cells"][5]} on time, {rows[0]["cells"][2]} open); {league["info"]}')
        return
    league = state['league']
    raise Failure(f'the department league: {state["problem"]}; the page showed:\n' +
                  '\n'.join(f'    {r}' for r in league.get('rows', [])) +
                  f'\n    info: {league.get("info")}')


def api_get(base, token, path):
    return api_client.get_json(base, token, path)


KINDS_JS = """
return [...document.querySelectorAll('#kinds li[data-kind]')].map((li) => ({
  id: li.dataset.kind,
  text: li.textContent.trim(),
  total: Number(li.querySelector('b').dataset.total),
  online: Number(li.querySelector('b').dataset.online),
}));
"""

KIND_DETAIL_JS = """
const sheet = document.getElementById('kind-detail');
return {
  open: !sheet.hidden,
  title: document.getElementById('kind-title').textContent.trim(),
  metrics: [...document.querySelectorAll('#kind-devices th[data-metric]')].map((th) => ({
    name: th.dataset.metric, text: th.textContent.trim() })),
  rows: [...document.querySelectorAll('#kind-devices tbody tr[data-device-id]')].map((tr) => ({
    id: tr.dataset.deviceId,
    values: [...tr.querySelectorAll('td[data-metric]')].map((td) => td.textContent.trim()),
  })),
};
"""


def check_kinds(driver, base, token):
    """The kinds' legend lists every kind of the catalogue the API serves, in its order,
    named as the catalogue names it, with counts that add up to the map's devices; a kind
    with devices opens their list, one column per metric of the catalogue with its label
    and unit, and the devices the API lists for that kind."""
    catalogue = api_get(base, token, '/api/v1/catalogue')['catalogue']
    kinds = catalogue['kinds']
    points = api_get(base, token, '/api/v1/map').get('points', [])
    last = {}

    def shown():
        legend = last['legend'] = driver.execute_script(KINDS_JS)
        return ([k['id'] for k in legend[:len(kinds)]] == [k['id'] for k in kinds] and
                sum(k['total'] for k in legend) == len(points))

    if not poll(shown, 30, 0.5):
        raise Failure(f'expected #kinds to list the catalogue\'s {len(kinds)} kinds '
                      f'({", ".join(k["id"] for k in kinds)}) with {len(points)} devices in all; '
                      f'it showed: {last.get("legend")}')
    legend = {k['id']: k for k in last['legend']}
    for k in kinds:
        if k['name']['en'] not in legend[k['id']]['text']:
            raise Failure(f'kind {k["id"]}: expected its name {k["name"]["en"]!r} in the legend, '
                          f'got {legend[k["id"]]["text"]!r}')
    with_devices = [k for k in kinds if legend[k['id']]['total'] > 0]
    if not with_devices:
        raise Failure(f'no kind in #kinds has devices: {last["legend"]}')
    kind = with_devices[-1]
    driver.execute_script(
        "document.querySelector(`#kinds li[data-kind='${arguments[0]}']`).click();", kind['id'])
    listed = {d['deviceId'] for d in api_get(
        base, token, f'/api/v1/devices?kind={kind["id"]}&page_size=200').get('devices', [])}

    def opened():
        detail = last['detail'] = driver.execute_script(KIND_DETAIL_JS)
        return detail['open'] and detail['rows']

    if not poll(opened, 30, 0.5):
        raise Failure(f'clicking kind {kind["id"]} expected #kind-detail with its devices; '
                      f'it showed: {last.get("detail")}')
    detail = last['detail']
    if kind['name']['en'] not in detail['title']:
        raise Failure(f'#kind-title {detail["title"]!r} lacks {kind["name"]["en"]!r}')
    want = [m['name'] for m in kind['metrics']]
    if [m['name'] for m in detail['metrics']] != want:
        raise Failure(f'kind {kind["id"]}: expected metric columns {want}, got {detail["metrics"]}')
    for m, th in zip(kind['metrics'], detail['metrics']):
        if m['label']['en'] not in th['text'] or m.get('unit', '') not in th['text']:
            raise Failure(f'metric column {th} lacks the label {m["label"]["en"]!r} and unit '
                          f'{m.get("unit", "")!r}')
    shown_ids = {r['id'] for r in detail['rows']}
    if not shown_ids <= listed or not shown_ids:
        raise Failure(f'kind {kind["id"]}: the list shows devices the API does not list for it: '
                      f'{sorted(shown_ids - listed)[:5]}')
    if not any(v != '—' for r in detail['rows'] for v in r['values']):
        raise Failure(f'kind {kind["id"]}: no device shows a metric value: {detail["rows"][:3]}')
    driver.execute_script("document.getElementById('kind-close').click();")
    counts = ', '.join(f"{k} {v['online']}/{v['total']}" for k, v in legend.items())
    log(f'kinds legend: {counts}; {kind["id"]} lists {len(detail["rows"])} devices with '
        f'{len(want)} metrics')


def open_yellow_case(driver):
    """Clicks an overdue case's row, yellow-lit if there is one, else red. The live board
    re-renders its rows as changes arrive; on a loaded machine it did so between
    WebDriver's find, scroll and click (a stale element each time), so the row is found,
    scrolled to and clicked in one script. Overdue cases come and go as the demo's crews
    handle them (a small city may have a single yellow one at a time), so this waits up to
    a minute for one to be shown."""
    last = {}

    def click():
        case_id = last['id'] = driver.execute_script("""
          const rows = [...document.querySelectorAll('tr.case-row')];
          const row = rows.find(r => r.querySelector('.light-yellow')) ||
                      rows.find(r => r.querySelector('.light-red'));
          if (!row) return null;
          row.scrollIntoView({block: 'center'});
          row.click();
          return row.getAttribute('data-case-id');""")
        return case_id

    case_id = poll(click, 60, 0.5)
    if case_id:
        return case_id
    raise Failure('found no yellow- or red-lit case row to click within a minute:\n' +
                  describe(driver.execute_script(SNAPSHOT_JS)))


def check_timeline(driver, base, token, case_id):
    """The open case's timeline lists its stream's events, including the overdue one."""
    last = {'state': {}, 'expected': 0}

    def shown():
        state = last['state'] = driver.execute_script("""
          const d = document.getElementById('case-detail');
          return {
            visible: !!d && !d.hidden,
            sub: document.getElementById('detail-sub').textContent,
            rows: [...document.querySelectorAll('#timeline .timeline-row')].map((r) => r.dataset.type),
            stages: document.querySelectorAll('#detail-stages .stage-seg').length,
            handling: document.getElementById('detail-handling').textContent,
          };""")
        detail = api_get(base, token, '/api/v1/cases/' + urllib.parse.quote(case_id, safe=''))
        expected = last['expected'] = len(detail.get('timeline', []))
        return (state['visible'] and case_id in state['sub'] and len(state['rows']) == expected
                and 'caseOverdue' in state['rows'] and state['stages'] == 5 and state['handling'])

    if poll(shown, 30, 1):
        state = last['state']
        log(f'case {case_id}: timeline shows {len(state["rows"])} events '
            f'({", ".join(state["rows"])}), {state["stages"]} stage times, {state["handling"]}')
        return
    state, expected = last['state'], last['expected']
    raise Failure(f'after clicking case {case_id} expected #case-detail visible with its id, one '
                  f'.timeline-row per event of GET /api/v1/cases/{case_id} ({expected}), among them '
                  f'a caseOverdue, and 5 stage times; the page showed:\n{describe(state)}')


def browser_errors(entries):
    return [e for e in entries if e.get('level') == 'SEVERE']


def run(args, workdir):
    demo = DemoProcess(args.cityops, workdir, os.path.join(args.artifacts, 'dashboard-demo.log'),
                       ['--devices', str(DEVICES), '--acceleration', str(ACCELERATION), '--seed', '1'],
                       log=log)
    driver = None
    try:
        demo.wait_ready(READY_TIMEOUT)
        url, base = demo.field('dashboard'), demo.field('http')
        token = re.search(r'#token=([0-9A-Za-z._-]+)', url)
        if not token:
            raise Failure(f'the dashboard address carries no #token=: {url}')
        token = token.group(1)
        log(f'demo ready; opening {url.split("#")[0]} in headless chromium')

        driver = start_browser(workdir)
        check_bad_token(driver, base)
        driver.get('about:blank')
        driver.get(url)
        snap = wait_for_big_screen(driver)
        if 'token=' in snap['url']:
            raise Failure(f'the token stayed in the address bar: {snap["url"]}')
        if 'demo.viewer' not in (snap['whoami'] or ''):
            raise Failure('expected the signed-in user demo.viewer in #whoami:\n' + describe(snap))
        if 'on' not in (snap['live'] or '').split():
            raise Failure('expected the change stream connected (#live.on):\n' + describe(snap))
        # --devices counts the typed kinds; the catalogue-only kinds come on top of them.
        total = number((snap['devices'] or '').split('/')[-1])
        if total <= DEVICES or number(snap['mapPoints']) != total:
            raise Failure(f'expected the map to draw all {total} devices ({DEVICES} of the '
                          'typed kinds and the catalogue-only ones on top):\n' + describe(snap))
        check_league(driver, base, token)
        driver.save_screenshot(os.path.join(args.artifacts, 'dashboard.png'))
        log('saved dashboard.png')
        check_kinds(driver, base, token)

        case_id = open_yellow_case(driver)
        log(f'clicked overdue case {case_id}')
        check_timeline(driver, base, token, case_id)
        driver.save_screenshot(os.path.join(args.artifacts, 'dashboard-case.png'))

        entries = driver.get_log('browser')
        errors = browser_errors(entries)
        if errors:
            raise Failure('the browser logged errors:\n' + '\n'.join(f'    {e["message"]}' for e in errors))
        log(f'browser console: {len(entries)} entries, no errors')
        violations = driver.execute_script('return window.__cspViolations;')
        if violations is None or violations:
            raise Failure(f'Content-Security-Policy violations (None: the watch did not run): {violations}')
        log('no Content-Security-Policy violation')
        check_no_token_in_urls(driver, demo, token)
        check_security_headers(base, token)
        log('final page state:\n' + describe(driver.execute_script(SNAPSHOT_JS)))

        # Ctrl-C with the dashboard still connected: the daemon ends the change stream and
        # exits 0, and the page says it lost the daemon.
        code = demo.stop(STOP_TIMEOUT)
        if code != 0:
            raise Failure(f'cityops demo exited with {code} after SIGINT, expected 0\n' + demo.log_tail())
        log('demo stopped cleanly (exit code 0)')
        last = {}

        def lost():
            snap = last['snap'] = driver.execute_script(SNAPSHOT_JS)
            return 'on' not in snap['live'].split() and snap['errors']

        if not poll(lost, 20, 0.5):
            raise Failure('after the demo stopped expected #live off and an error shown; the page '
                          'showed:\n' + describe(last['snap']))
        log('the page shows the lost daemon: ' + ' '.join(last['snap']['errors'].split()))
    except Exception:
        if driver is not None:
            try:
                driver.save_screenshot(os.path.join(args.artifacts, 'dashboard-failure.png'))
                for e in driver.get_log('browser'):
                    print(f'  browser {e.get("level")}: {e.get("message")}')
            except WebDriverException:
                pass
        if demo.proc.poll() is not None:
            print(f'cityops demo exited early with {demo.proc.returncode}\n{demo.log_tail()}')
        raise
    finally:
        if driver is not None:
            driver.quit()
        demo.kill()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cityops', required=True, help='the cityops binary')
    parser.add_argument('--artifacts', required=True, help='directory for screenshots and logs')
    args = parser.parse_args()
    args.cityops = os.path.abspath(args.cityops)
    args.artifacts = os.path.abspath(args.artifacts)
    os.makedirs(args.artifacts, exist_ok=True)
    for path in (args.cityops, CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            sys.exit(f'dashboard_test: {path} is missing or not executable')
    workdir = tempfile.mkdtemp(prefix='cityops-dashboard-')
    try:
        run(args, workdir)
    except Failure as e:
        print(f'FAILED: {e}', flush=True)
        print(f'artifacts: {args.artifacts}')
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log(f'PASSED; screenshots in {args.artifacts}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
