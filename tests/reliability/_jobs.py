"Functions the zygote runs in a child (they need a fresh process, or a callback the CLI can't pass)."
import torch
from fastai.callback.core import Callback

class InfLoss(Callback):
    "Make the training loss inf from the `at`-th batch on, as an overflow would."
    order = -10
    def __init__(self, at:int=2): self.at, self.n = at, 0
    def after_loss(self):
        if self.training:
            self.n += 1
            if self.n >= self.at: self.learn.loss = self.learn.loss * float('inf'); self.learn.loss_grad = self.learn.loss

def train_with_inf(data:str, out:str, **cfg) -> int:
    from finetune_kit.training import train
    res = train(data=data, out=out, verbose=False, cbs=[InfLoss()], **cfg)
    print('status:', res.status)
    return 0 if res.status == 'completed' else 3
