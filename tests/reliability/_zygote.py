"""A pre-imported process that forks one child per job: each `finetune-kit` run or sweep starts in ~0.1 s instead of ~9 s.

Protocol: one JSON job per stdin line -> the child's pid on stdout. A job: `fn` ('module:name'), `args`, `kwargs`, `env`,
`cwd`, `log` (stdout+stderr of the child), `rc_file` (its exit code, written at the end), `kill` (a kill point, see
`_install_kill`) and `unprotect` (protections to switch off, to show a test fails without them)."""
import io, json, os, signal, sys, traceback, importlib, pathlib

def _die():
    "SIGKILL ourselves: nothing runs after this line, no finally, no atexit."
    sys.stdout.flush(); sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

def _half(dest, data:bytes):
    "Write the first half of `data` to `dest` (a path or a file object), as a process killed mid-write leaves it."
    if hasattr(dest, 'write'): dest.write(data[:len(data)//2]); dest.flush()
    else:
        with open(dest, 'wb') as f: f.write(data[:len(data)//2])

def _install_kill(point:str):
    """Kill this process at the N-th event of a kind: `check:N` (file checked), `batch:N` (training batch), `checkpoint:N`
    (torch.save, half written), `weights:N` (safetensors save, half written), `write:NAME:N` (a write to a file whose
    name contains NAME, half written), `trial:N` (the N-th trial process started: kill the controller right after)."""
    kind, *rest = point.split(':'); n, count = int(rest[-1]), [0]
    def tick():
        count[0] += 1
        return count[0] == n
    if kind == 'check':
        import finetune_kit.data as d
        orig = d.check_file
        def check_file(*a, **k):
            if tick(): _die()
            return orig(*a, **k)
        d.check_file = check_file
    elif kind == 'batch':
        from fastai.learner import Learner
        orig = Learner._do_one_batch
        def _do_one_batch(self):
            if self.training and tick(): _die()
            return orig(self)
        Learner._do_one_batch = _do_one_batch
    elif kind == 'checkpoint':
        import torch
        orig = torch.save
        def save(obj, f, *a, **k):
            if not tick(): return orig(obj, f, *a, **k)
            buf = io.BytesIO(); orig(obj, buf, *a, **k); _half(f, buf.getvalue()); _die()
        torch.save = save
    elif kind == 'weights':
        import safetensors.torch as st
        orig = st.save_file
        def save_file(tensors, filename, metadata=None):
            if not tick(): return orig(tensors, filename, metadata)
            _half(filename, st.save(tensors, metadata)); _die()
        st.save_file = save_file
    elif kind == 'write':
        name, P = rest[0], pathlib.Path
        wb, wt = P.write_bytes, P.write_text
        def write_bytes(self, data):
            if name in self.name and tick(): _half(self, data); _die()
            return wb(self, data)
        def write_text(self, data, *a, **k):
            if name in self.name and tick(): _half(self, data.encode()); _die()
            return wt(self, data, *a, **k)
        P.write_bytes, P.write_text = write_bytes, write_text
    elif kind == 'trial':
        import finetune_kit.sweep as sw
        orig = sw.launch_trial
        def launch_trial(*a, **k):
            p = orig(*a, **k)
            if tick():
                import time; time.sleep(float(rest[0]) if len(rest) > 1 else 0); _die()
            return p
        sw.launch_trial = launch_trial
    else: raise ValueError(f'unknown kill point {point!r}')

def _unprotect(names:list):
    "Switch protections off (only in this child), to check that the tests catch their absence."
    import finetune_kit.training as t
    for name in names:
        if name == 'atomic':   # plain writes: a kill mid-write leaves half a file
            t._write_atomic = lambda p, d: pathlib.Path(p).write_bytes(d.encode() if isinstance(d, str) else d)
        elif name == 'rng': t._set_rng_state = lambda learn, s: None
        else: raise ValueError(f'unknown protection {name!r}')

def _child(job:dict):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.setpgid(0, 0)
    os.environ.update(job.get('env') or {})
    if job.get('cwd'): os.chdir(job['cwd'])
    fd = os.open(job['log'], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1); os.dup2(fd, 2); os.close(fd)
    rc = 1
    try:
        import torch; torch.set_num_threads(1)
        if job.get('unprotect'): _unprotect(job['unprotect'])
        if job.get('kill'): _install_kill(job['kill'])
        mod, name = job['fn'].split(':')
        res = getattr(importlib.import_module(mod), name)(*job.get('args', []), **job.get('kwargs', {}))
        rc = res if isinstance(res, int) else 0
    except SystemExit as e: rc = e.code if isinstance(e.code, int) else 1
    except BaseException: traceback.print_exc(); rc = 1
    sys.stdout.flush(); sys.stderr.flush()
    if job.get('rc_file'): pathlib.Path(job['rc_file']).write_text(str(rc))
    os._exit(rc)

def main():
    import torch  # noqa: F401  everything a job needs, imported once, before any fork
    import finetune_kit.cli, finetune_kit.training, finetune_kit.inference, finetune_kit.sweep, finetune_kit.analysis  # noqa: F401
    import fastai.learner, safetensors.torch  # noqa: F401
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; the tests watch their pids
    print('ready', flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush(); sys.stderr.flush()
        pid = os.fork()
        if pid == 0: _child(job)
        print(pid, flush=True)

if __name__ == '__main__': main()
