"The benchmarks run from the README's environment: each one's small configuration, on this machine's CPU."
import sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'bench'))

def test_bench_gpu_small_runs_both_loops(tmp_path):
    import bench_gpu
    rows = bench_gpu.main(['--small', '--out', str(tmp_path)])
    assert [r['loop'] for r in rows] == ['plain', 'kit'] and all(r['images_per_s'] > 0 for r in rows)
    assert (tmp_path/'bench_gpu.json').exists()
