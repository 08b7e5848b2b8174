"""One sweep, many machines: sweep processes with their own `--out` sharing one study on a real PostgreSQL server.

A session fixture starts a throwaway server (initdb into a temp folder, loopback only, a free port; as the `postgres`
user when we are root, since the server refuses root) and stops it afterwards. Each "machine" is a
`finetune-kit sweep` process (`finetune_kit.cli.main`) whose trials run a stand-in trainer, so a trial takes a second
or two. The tests skip, saying why, only where the PostgreSQL server programs are missing (`make postgres`)."""
import os, pwd, shutil, signal, socket, subprocess, sys, tempfile, textwrap, threading, time
from glob import glob
from pathlib import Path
import optuna, pandas as pd, pytest, yaml

FAKE = textwrap.dedent('''
    import argparse, json, math, os, sys, time, yaml
    ap = argparse.ArgumentParser(); ap.add_argument('--config'); ap.add_argument('--out'); a = ap.parse_args()
    cfg, out = yaml.safe_load(open(a.config)), a.out
    open(os.path.join(out, 'pid'), 'w').write(str(os.getpid()))
    hist = os.path.join(out, 'history.csv')
    with open(hist, 'w') as f: f.write('epoch,valid_loss\\n')
    for e in range(cfg['epochs']):
        time.sleep(float(os.environ.get('FAKE_EPOCH_S', '0.3')))
        loss = (math.log10(cfg['learning_rate']) + 2.5)**2 + 1/(e + 1)
        with open(hist, 'a') as f: f.write(f'{e},{loss}\\n')
    json.dump({'valid_loss': loss, 'status': 'completed'}, open(os.path.join(out, 'metrics.json'), 'w'))
''')
SWEEP = {'method': 'random', 'name': 'pg', 'metric': {'name': 'valid_loss', 'goal': 'minimize'},
         'parameters': {'learning_rate': {'distribution': 'log_uniform_values', 'min': 1e-4, 'max': 1e-2},
                        'epochs': {'value': 3}, 'data': {'value': 'sample'}}}
# `finetune-kit sweep ARGS` with the stand-in trainer as the command every trial runs
RUNNER = ("import sys, finetune_kit.sweep as s; from finetune_kit.cli import main; "
          "s.TRAIN_CMD = (sys.executable, sys.argv[1]); sys.exit(main(sys.argv[2:]))")

def _pg_bin():
    found = sorted(glob('/usr/lib/postgresql/*/bin/initdb'), key=lambda p: int(Path(p).parts[4]))
    if found: return Path(found[-1]).parent
    return Path(shutil.which('initdb')).parent if shutil.which('initdb') and shutil.which('pg_ctl') else None

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Server:
    "A PostgreSQL server in a temp folder, on 127.0.0.1:port, with one password user `kit`"
    def __init__(self, bin_dir:Path, root:Path, as_pg:list):
        self.bin, self.root, self.as_pg, self.port = bin_dir, root, as_pg, _free_port()
    def run(self, prog, *args, **kw):
        return subprocess.run([*self.as_pg, str(self.bin/prog), *map(str, args)], check=True, capture_output=True, text=True, **kw)
    def start(self):
        (self.root/'pw').write_text('postgres-pw\n')
        self.run('initdb', '-D', self.root/'data', '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256',
                 f'--pwfile={self.root/"pw"}', '-E', 'UTF8', '--no-instructions')
        self.opts = f"-k {self.root} -h 127.0.0.1 -p {self.port} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.run('pg_ctl', '-D', self.root/'data', '-l', self.root/'log', '-w', '-t', '60', '-o', self.opts, 'start')
        self.sql("CREATE USER kit PASSWORD 'kitpw'")
    def sql(self, q): return self.run('psql', '-h', self.root, '-p', self.port, '-U', 'postgres', '-d', 'postgres', '-v', 'ON_ERROR_STOP=1', '-c', q)
    def database(self, name):
        "A new database owned by `kit`; its URL"
        self.sql(f'CREATE DATABASE {name} OWNER kit')
        return self.url(name)
    def url(self, name, password='kitpw', port=None): return f'postgresql://kit:{password}@127.0.0.1:{port or self.port}/{name}'
    def restart(self, down_s=0):
        "Restart the server (`pg_ctl restart -m fast`: clients are disconnected), staying down `down_s` seconds in between"
        if not down_s: return self.run('pg_ctl', '-D', self.root/'data', '-l', self.root/'log', '-w', '-t', '60', '-m', 'fast', 'restart', timeout=90)
        self.run('pg_ctl', '-D', self.root/'data', '-w', '-t', '60', '-m', 'fast', 'stop', timeout=90)
        time.sleep(down_s)
        self.run('pg_ctl', '-D', self.root/'data', '-l', self.root/'log', '-w', '-t', '60', '-o', self.opts, 'start', timeout=90)
    def stop(self): self.run('pg_ctl', '-D', self.root/'data', '-w', '-m', 'immediate', 'stop')

@pytest.fixture(scope='session')
def pg():
    "A PostgreSQL server for the session (skipped, saying why, where its programs are missing)"
    bin_dir = _pg_bin()
    if bin_dir is None: pytest.skip("PostgreSQL server programs (initdb, pg_ctl) not found: `make postgres` installs Debian's postgresql")
    as_pg = []
    if os.geteuid() == 0:   # the server refuses to run as root
        try: pwd.getpwnam('postgres')
        except KeyError: pytest.skip("running as root, and there is no 'postgres' user to run the PostgreSQL server as")
        as_pg = ['runuser', '-u', 'postgres', '--']
    root = Path(tempfile.mkdtemp(prefix='kit-pg-'))
    if as_pg: shutil.chown(root, 'postgres')
    srv = Server(bin_dir, root, as_pg)
    try:
        srv.start()
        yield srv
    finally:
        try: srv.stop()
        except subprocess.CalledProcessError: pass
        shutil.rmtree(root, ignore_errors=True)

@pytest.fixture
def fake(tmp_path):
    p = tmp_path/'fake_trainer.py'
    p.write_text(FAKE)
    return p

def _machine(fake, y, out, url, *args, epoch_s=0.3):
    "One machine: `finetune-kit sweep` in its own process with its own --out"
    env = {**os.environ, 'FAKE_EPOCH_S': str(epoch_s), 'WANDB_MODE': 'offline'}
    return subprocess.Popen([sys.executable, '-c', RUNNER, str(fake), 'sweep', str(y), '--storage', url, '--out', str(out),
                             '--no_preflight', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)

def _yaml(tmp_path, **kw):
    p = tmp_path/'sweep.yaml'
    p.write_text(yaml.safe_dump({**SWEEP, **kw}))
    return p

def _wait_for(cond, timeout=60):
    t = time.time()
    while not cond():
        assert time.time() - t < timeout, 'timed out'
        time.sleep(0.1)

def _trial_dirs(out): return {int(p.name): p for p in (Path(out)/'trials').glob('[0-9]*')}

def _check_exactly(url, outs, n, lost=(), finished=None):
    "`n` completed trials, numbered once and each run in one machine's folder; only the `lost` ones failed"
    study = optuna.load_study(study_name='pg', storage=url)
    ts = study.get_trials()
    states = pd.Series([t.state.name for t in ts]).value_counts().to_dict()
    assert states == {'COMPLETE': n, **({'FAIL': len(lost)} if lost else {})}, states
    assert sorted(t.number for t in ts) == list(range(n + len(lost)))
    done = [t for t in ts if t.state.name == 'COMPLETE']
    assert len({t.params['learning_rate'] for t in done}) == n   # no trial was drawn (or run) twice
    folders = [_trial_dirs(o) for o in outs]
    assert sum(len(f) for f in folders) == n + len(lost)   # each trial ran on one machine only
    assert set().union(*folders) == {t.number for t in ts}
    for t in done:
        out = next(o for o, f in zip(outs, folders) if t.number in f)
        assert t.user_attrs['trial_dir'] == f'trials/{t.number:04d}' and (out/t.user_attrs['trial_dir']/'metrics.json').exists()
        assert yaml.safe_load((out/t.user_attrs['trial_dir']/'trial.yaml').read_text())['learning_rate'] == t.params['learning_rate']
    for o in finished or outs:   # every machine that finished has a results.csv of the whole study
        r = pd.read_csv(Path(o)/'results.csv')
        assert (r.state == 'COMPLETE').sum() == n and r.number.is_unique and len(r) == len(ts)
    return ts

def test_machines_share_one_count(pg, fake, tmp_path):
    "Three machines with --count 6: exactly 6 completed trials, none drawn or run twice; `analyze` reads them all"
    url, y = pg.database('share'), _yaml(tmp_path)
    outs = [tmp_path/f'm{i}' for i in range(3)]
    procs = [_machine(fake, y, o, url, '--count', 6, epoch_s=0.4) for o in outs]
    for p in procs: assert p.wait(120) == 0, p.stdout.read()[-3000:]
    ts = _check_exactly(url, outs, 6)
    assert sum(bool(_trial_dirs(o)) for o in outs) >= 2   # the machines did share the work
    from finetune_kit.analysis import read_runs
    runs = read_runs(url)
    assert len(runs) == 6 and runs.status.eq('completed').all() and set(runs.run) == {f'pg/{t.number}' for t in ts}

def test_sigkill_one_machine_mid_trial(pg, fake, tmp_path):
    "A machine killed mid-trial: another retries its trial after the heartbeat grace; still exactly `count` completed"
    url, y = pg.database('kill'), _yaml(tmp_path, parameters={**SWEEP['parameters'], 'epochs': {'value': 4}})
    a, b = tmp_path/'a', tmp_path/'b'
    pa = _machine(fake, y, a, url, '--count', 4, '--heartbeat_s', 1, epoch_s=0.5)
    _wait_for(lambda: any(len((d/'history.csv').read_text().splitlines()) >= 2 for d in _trial_dirs(a).values()
                          if (d/'history.csv').exists()))
    pb = _machine(fake, y, b, url, '--count', 4, '--heartbeat_s', 1, epoch_s=0.5)
    [(victim, d)] = [(n, d) for n, d in _trial_dirs(a).items() if not (d/'metrics.json').exists()]
    pa.send_signal(signal.SIGKILL); pa.wait()   # the sweep process only: its trial dies with it (PR_SET_PDEATHSIG)
    killed_at = time.time()
    assert pb.wait(120) == 0, pb.stdout.read()[-3000:]
    ts = _check_exactly(url, [a, b], 4, lost=[victim], finished=[b])
    assert ts[victim].state.name == 'FAIL' and not (d/'metrics.json').exists()
    [retry] = [t for t in ts if t.system_attrs.get('failed_trial') == victim]
    assert retry.state.name == 'COMPLETE' and retry.params == ts[victim].params and retry.number in _trial_dirs(b)
    assert retry.datetime_start.timestamp() - killed_at < 3*1 + 10   # retried within the grace (3 heartbeats) and a poll

def test_database_restart_mid_sweep(pg, fake, tmp_path):
    "PostgreSQL restarted while two machines run trials and a third waits: all reconnect and finish; nothing lost or doubled"
    url, y = pg.database('restart'), _yaml(tmp_path, parameters={**SWEEP['parameters'], 'epochs': {'value': 8}})
    outs = [tmp_path/'a', tmp_path/'b', tmp_path/'c']
    run = lambda o: _machine(fake, y, o, url, '--count', 2, '--heartbeat_s', 1, epoch_s=0.6)
    procs = [run(o) for o in outs[:2]]
    running = lambda: [d for o in outs for d in _trial_dirs(o).values() if (d/'history.csv').exists() and not (d/'metrics.json').exists()]
    _wait_for(lambda: len(running()) == 2, 90)
    procs.append(run(outs[2]))   # a third machine, with nothing left to start: it waits, asking the study every second
    study = optuna.load_study(study_name='pg', storage=url)
    _wait_for(lambda: study._storage.get_study_system_attrs(study._study_id).get('openings') == 3, 60)
    assert len(running()) == 2
    pg.restart(down_s=5)   # calls in flight fail and are retried; every heartbeat stops for longer than the grace (3 s)
    logs = [p.communicate(timeout=150)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [l[-3000:] for l in logs]
    assert all('database unreachable' in l and 'database back' in l for l in logs), logs
    _check_exactly(url, outs, 2)
    assert not _trial_dirs(outs[2])   # the waiting machine did not declare the others' trials lost and run them again

def test_wrong_password_and_unreachable_port(pg, fake, tmp_path):
    "A wrong password, or a port nothing listens on: one line naming the URL without its password, within seconds"
    url, y = pg.database('bad'), _yaml(tmp_path)
    for bad, why in ((pg.url('bad', password='wr0ng-pw'), 'password authentication failed'),
                     (pg.url('bad', password='kitpw', port=_free_port()), 'Connection refused')):
        t = time.time()
        p = _machine(fake, y, tmp_path/'out', bad, '--count', 2)
        text = p.communicate(timeout=60)[0]
        lines = [l for l in text.splitlines() if l.strip()]
        assert p.returncode == 2 and len(lines) == 1, text
        safe = bad.replace(':wr0ng-pw@', ':***@').replace(':kitpw@', ':***@')
        assert lines[0].startswith(f"finetune-kit: error: cannot open the sweep's storage {safe}: ") and why in lines[0], lines[0]
        assert 'wr0ng-pw' not in text and 'kitpw' not in text and 'Traceback' not in text
        assert time.time() - t < 30   # most of it is starting Python; the connection itself fails at once
        assert not (tmp_path/'out'/'trials').exists()

def test_silent_server_times_out(monkeypatch):
    "A host that accepts the connection but never answers (as a firewalled one does) is reported after the connect timeout"
    import finetune_kit.sweep as fs
    monkeypatch.setattr(fs, '_CONNECT_S', 2)
    with socket.socket() as srv:
        srv.bind(('127.0.0.1', 0)); srv.listen(1)
        url = f'postgresql://kit:s3cret@127.0.0.1:{srv.getsockname()[1]}/sweeps'
        t = time.time()
        with pytest.raises(ValueError) as e: fs.check_storage(url)
    assert time.time() - t < 10, time.time() - t
    assert str(e.value).startswith(f"cannot open the sweep's storage postgresql://kit:***@127.0.0.1:") and 's3cret' not in str(e.value)
    assert 'timeout' in str(e.value).lower(), str(e.value)

def test_missing_driver_says_how_to_install(monkeypatch, tmp_path):
    "Without psycopg the error names the extra that installs it, not Optuna's 'Failed to import DB access module'"
    import finetune_kit.sweep as fs
    for m in [m for m in sys.modules if m == 'psycopg' or m.startswith('psycopg.')]: monkeypatch.delitem(sys.modules, m)
    monkeypatch.setitem(sys.modules, 'psycopg', None)
    with pytest.raises(ValueError, match=r"storage postgresql://kit:\*\*\*@db.lan/sweeps: no database driver .*pip install 'finetune-kit\[sweep\]'"):
        fs.check_storage('postgresql://kit:s3cret@db.lan/sweeps')
