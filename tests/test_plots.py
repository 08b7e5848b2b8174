"Plots: every function returns a Figure, draws into a given Axes, never shows, and imports nothing else from finetune_kit."
import ast, inspect
import matplotlib
import matplotlib.pyplot as plt
import numpy as np, pandas as pd, pytest
from matplotlib.figure import Figure

from finetune_kit import plots

SUMMARY = pd.DataFrame(dict(model_name=['a_1', 'a_2', 'b_1', 'b_2', 'c_1'], model_family=['a', 'a', 'b', 'b', 'c'],
                            fit_time_mean=[10., 40., 20., 80., np.nan], error_rate_best=[0.2, 0.1, 0.25, 0.05, 0.01]))
RUNS = pd.DataFrame(dict(model_name=['a'] * 3 + ['b'] * 3, learning_rate=[1e-4, 1e-3, 1e-2] * 2,
                         batch_size=[16, 32, 64] * 2, error_rate=[0.3, 0.2, 0.25, 0.4, 0.3, 0.5]))
HIST = pd.DataFrame(dict(phase=['frozen', 'unfrozen', 'unfrozen'], epoch=[0, 0, 1], train_loss=[1.0, 0.7, 0.5],
                         valid_loss=[0.9, 0.6, 0.55], error_rate=[0.3, 0.2, 0.15], time_s=[3.0, 4.0, 4.0]))

CALLS = {  # name -> (args, kwargs) for one call of each `ax=None` plot function
    'plot_loss': ((HIST,), {}),
    'plot_confusion': ((np.array([[5, 1], [2, 7]]), ['cat', 'dog']), {}),
    'plot_pareto': ((SUMMARY,), {}),
    'plot_score': ((SUMMARY.assign(score=SUMMARY.error_rate_best * (SUMMARY.fit_time_mean + 80)),), {}),
    'plot_importance': (({'learning_rate': 0.6, 'batch_size': 0.4},), {}),
    'plot_lr_effect': ((RUNS,), {}),
    'plot_parallel': ((RUNS, ['model_name', 'learning_rate', 'batch_size']), {}),
}


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    monkeypatch.setattr(plt, 'show', lambda *a, **k: pytest.fail('plots must never call plt.show()'))
    yield
    plt.close('all')


@pytest.mark.parametrize('name', sorted(CALLS))
def test_returns_figure_and_uses_given_ax(name):
    f = getattr(plots, name)
    assert 'ax' in inspect.signature(f).parameters
    args, kw = CALLS[name]
    assert isinstance(f(*args, **kw), Figure)
    fig, axs = plt.subplots(1, 2)
    assert f(*args, ax=axs[1], **kw) is fig
    assert axs[1].has_data() and not axs[0].has_data()


def test_plot_loss_phases():
    ax = plots.plot_loss(HIST).axes[0]
    assert [l.get_label() for l in ax.lines] == ['train_loss', 'valid_loss']
    assert list(ax.lines[1].get_ydata()) == [0.9, 0.6, 0.55]
    assert len(ax.patches) == 2  # one shaded span per phase
    assert [t.get_text() for t in ax.texts] == ['frozen', 'unfrozen']


def test_plot_loss_without_phase_or_valid():
    ax = plots.plot_loss(HIST.drop(columns=['phase', 'valid_loss'])).axes[0]
    assert [l.get_label() for l in ax.lines] == ['train_loss'] and len(ax.patches) == 1


def test_plot_confusion_values_and_normalize():
    cm = np.array([[5, 1, 0], [2, 7, 1], [0, 0, 4]])
    ax = plots.plot_confusion(cm, ['a', 'b', 'c']).axes[0]
    assert [t.get_text() for t in ax.texts] == [str(v) for v in cm.flatten()]
    assert [t.get_text() for t in ax.get_xticklabels()] == ['a', 'b', 'c']
    ax = plots.plot_confusion(cm, ['a', 'b', 'c'], normalize=True).axes[0]
    assert ax.texts[0].get_text() == f'{5 / 6:.2f}'


def test_plot_top_losses_grid():
    ims = [np.full((8, 8, 3), i * 20, dtype=np.uint8) for i in range(7)]
    fig = plots.plot_top_losses(ims, [f't{i}' for i in range(7)], ncols=3)
    assert len(fig.axes) == 9 and [a.get_title() for a in fig.axes[:7]] == [f't{i}' for i in range(7)]
    assert sum(bool(a.images) for a in fig.axes) == 7


def test_plot_pareto_front_and_log_axis():
    ax = plots.plot_pareto(SUMMARY).axes[0]
    assert ax.get_xscale() == 'log'
    assert {t.get_text() for t in ax.texts} == {'a_1', 'a_2', 'b_2'}  # c_1 has no time; b_1 dominated by a_1
    front = [l for l in ax.lines if l.get_label() == 'Pareto front'][0]
    assert list(front.get_xdata()) == [10., 40., 80.]
    # a given `pareto` column is drawn as is
    ax = plots.plot_pareto(SUMMARY.assign(pareto=[True, False, False, False, False])).axes[0]
    assert [t.get_text() for t in ax.texts] == ['a_1']


def test_plot_pareto_maximised_metric():
    s = SUMMARY.assign(accuracy_best=1 - SUMMARY.error_rate_best)
    ax = plots.plot_pareto(s, y='accuracy_best', y_goal='maximize').axes[0]
    assert {t.get_text() for t in ax.texts} == {'a_1', 'a_2', 'b_2'}  # the same front, higher is better
    assert 'higher is better' in ax.get_ylabel()


def test_plot_lr_effect_best_run_per_point():
    runs = pd.concat([RUNS, RUNS.iloc[[1]].assign(error_rate=0.4)])  # a worse second run of `a` at 1e-3
    ax = plots.plot_lr_effect(runs).axes[0]
    a = [l for l in ax.lines if l.get_label() == 'a'][0]
    assert list(a.get_ydata()) == [0.3, 0.2, 0.25]  # each point is the best run, as best_config picks
    star = [l for l in ax.lines if l.get_label() == 'best run'][0]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (1e-3, 0.2) and 'lower is better' in ax.get_title()
    ax = plots.plot_lr_effect(runs.assign(accuracy=1 - runs.error_rate), 'accuracy', goal='maximize').axes[0]
    star = [l for l in ax.lines if l.get_label() == 'best run'][0]
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (1e-3, 0.8) and 'higher is better' in ax.get_title()


def test_plot_score_best_on_top():
    s = CALLS['plot_score'][0][0]
    ax = plots.plot_score(s, n=2).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ['a_2', 'b_2']


def test_plot_parallel_lines_per_run():
    ax = plots.plot_parallel(RUNS, ['model_name', 'learning_rate']).axes[0]
    assert len([l for l in ax.lines if len(l.get_xdata()) == 3]) == len(RUNS)


def test_plots_imports_nothing_from_finetune_kit():
    tree = ast.parse(inspect.getsource(plots))
    mods = [n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    mods += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in mods if m.startswith('finetune_kit')]
    assert 'plt.show' not in inspect.getsource(plots)
