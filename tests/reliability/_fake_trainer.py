"""A stand-in for `finetune-kit train --config C --out D` (the run folder contract in a few lines): history.csv row by row,
then metrics.json. learning_rate > 1 gives a NaN loss (failed, exit 1); 0.5 <= learning_rate <= 1 a 'completed' run whose
valid_loss is inf (exit 0), which the sweep must not count."""
import argparse, json, math, os, sys, time, yaml
ap = argparse.ArgumentParser(); ap.add_argument('--config'); ap.add_argument('--out'); a = ap.parse_args()
cfg, out = yaml.safe_load(open(a.config)), a.out
open(os.path.join(out, 'pid'), 'w').write(str(os.getpid()))
if cfg.get('tracking') == 'wandb': os.makedirs(os.path.join(out, 'wandb', 'offline-run-20250101_000000-x' + os.path.basename(out)), exist_ok=True)
lr, epochs = cfg['learning_rate'], cfg.get('epochs', 3)
hist = os.path.join(out, 'history.csv')
with open(hist, 'w') as f: f.write('phase,epoch,train_loss,valid_loss,error_rate,time_s\n')
for e in range(epochs):
    time.sleep(float(os.environ.get('FAKE_EPOCH_S', '0')))
    loss = float('nan') if lr > 1 else float('inf') if 0.5 <= lr <= 1 else (math.log10(lr) + 2.5)**2 + 1/(e + 1)
    with open(hist, 'a') as f: f.write(f'unfrozen,{e + 1},{loss},{loss},0.5,0.1\n')
    if math.isnan(loss):
        json.dump({'status': 'failed: nan loss'}, open(os.path.join(out, 'metrics.json'), 'w'))
        print('training failed: nan loss'); sys.exit(1)
json.dump({'valid_loss': loss, 'error_rate': 0.5, 'fit_time_s': 0.1, 'peak_mem_mb': 10.0, 'status': 'completed'},
          open(os.path.join(out, 'metrics.json'), 'w'))
