"""Modular backpropagation: linear regression as a Linear layer plus an MSE loss (seed 002).

The tutorial ("Backpropagation Modular") builds linear regression from two modules, a
linear layer and a squared-error layer, each with a forward pass (caching its input)
and a backward pass (delta in, delta out), and trains it by gradient descent on
synthetic data: y = 5 + 3x + N(0, 3), NumPy seed 0. It finds

    w_hat = [[5.15990836], [2.95540097]]   (intercept, slope)

Here the same two modules are airi's ``Linear`` and ``MSELoss``, on the tutorial's own
data, with the tutorial's own initial weights, and the result is the same numbers.

Run:  python examples/linear_regression.py [--quick] [--plots DIR]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import airi
except ImportError:  # run from a clone without `pip install .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import airi
from airi.layers import Linear
from airi.losses import MSELoss
from airi.optim import SGD

TUTORIAL_W_HAT = np.array([5.15990836, 2.95540097])


def make_tutorial_data():
    """The tutorial's data and initial weights, drawn exactly as it draws them.

    ``np.random.seed(0)``; x = linspace(-10, 10, 100); y = 5 + 3x + normal(0, 3, 100);
    then ``w_hat = normal(0, 1, size=(2, 1))`` from the same global generator (the
    tutorial draws it inside ``fit``, after the noise).

    Returns
    -------
    X : ndarray (100, 2)
        A column of ones (the intercept's input, ``np.insert(x, 0, 1, 1)``) and x.
    y : ndarray (100, 1)
    w_init : ndarray (2, 1)
    """
    np.random.seed(0)
    x = np.linspace(-10, 10, 100)
    y = 5 + 3 * x + np.random.normal(0, 3, 100)
    X = np.insert(x.reshape(-1, 1), 0, 1, 1)
    w_init = np.random.normal(0, 1, size=(2, 1))
    return X, y.reshape(-1, 1), w_init


# The tutorial's squared-error layer returns (z - y) as its delta and its linear layer
# divides dW by N: its step is lr * X^T (z - y) / N. MSELoss.backward() is the exact
# derivative of mean((z - y)^2), 2 (z - y) / N, twice that; so half the tutorial's
# learning rate (0.05) makes every step identical.
TUTORIAL_LR = 0.05
LR = TUTORIAL_LR / 2
TRAINING_ITERS = 100


def fit_like_the_tutorial(X, y, w_init, lr=LR, iters=TRAINING_ITERS):
    """The tutorial's loop with airi modules: forward, loss, backward, update.

    Returns the learned weights (2,) and the loss of every iteration.
    """
    linear_layer = Linear(input_size=2, hidden_size=1, bias=False, dtype=np.float64)
    linear_layer.W.data = w_init.copy()      # the tutorial's initial w_hat
    loss = MSELoss()                           # the cost layer
    losses = []
    for _ in range(iters):
        # forward pass: each module caches its input
        z2 = linear_layer(X)
        losses.append(loss(z2, y))
        # backward pass: the cost starts it, each layer passes the delta back
        d2 = loss.backward()
        linear_layer.backward(d2)              # stores dL/dW in W.grad
        # gradient descent on the layer's own parameters
        linear_layer.update(lr=lr)
        linear_layer.zero_grad()
    return linear_layer.W.data.ravel().copy(), losses


def fit_with_bias_and_optimizer(x, y, w_init, lr=LR, iters=TRAINING_ITERS):
    """The same model the airi way: ``Linear(1, 1)`` learns the intercept as its bias,
    and an ``SGD`` optimizer (PyTorch-style ``zero_grad``/``step``) does the update.

    Returns (intercept, slope).
    """
    layer = Linear(input_size=1, hidden_size=1, bias=True, dtype=np.float64)
    layer.b.data = w_init[0].copy()          # intercept
    layer.W.data = w_init[1:].copy()         # slope, shape (1, 1)
    loss = MSELoss()
    optimizer = SGD(layer.parameters(), lr=lr)
    for _ in range(iters):
        optimizer.zero_grad()
        loss(layer(x), y)
        layer.backward(loss.backward())
        optimizer.step()
    return np.array([layer.b.data[0], layer.W.data[0, 0]])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI mode (the same run: it takes well under a second)")
    parser.add_argument("--plots", metavar="DIR",
                        help="write the loss curve to DIR/linear_regression_loss.png and "
                             "the fitted line over the data to "
                             "DIR/linear_regression_fit.png (needs the plot extra)")
    args = parser.parse_args(argv)
    if args.plots:
        try:
            airi.viz.check_matplotlib()      # fail now, not after training
        except ImportError as error:
            parser.error(str(error))
    return args


def main(argv=None):
    """Run the example; returns a dict with ``w_hat`` (intercept, slope) and more."""
    args = parse_args(argv)
    X, y, w_init = make_tutorial_data()
    print(f"data: {len(X)} points of y = 5 + 3x + N(0, 3) "
          "(NumPy seed 0, as in the tutorial)")
    print(f"initial w_hat: {np.round(w_init.ravel(), 4).tolist()}")

    w_hat, losses = fit_like_the_tutorial(X, y, w_init)
    print(f"\nLinear(2, 1, bias=False) + MSELoss, {TRAINING_ITERS} gradient steps:")
    print(f"  MSE: {losses[0]:.2f} at the start, {losses[-1]:.4f} at the end")
    print(f"  w_hat = {np.array2string(w_hat, precision=8)}   (intercept, slope)")
    print(f"  tutorial:  {np.array2string(TUTORIAL_W_HAT, precision=8)}")

    w_bias = fit_with_bias_and_optimizer(X[:, 1:], y, w_init)
    print("\nLinear(1, 1) with a bias + SGD optimizer (zero_grad / step):")
    print(f"  intercept = {w_bias[0]:.8f}, slope = {w_bias[1]:.8f}")

    exact = np.linalg.lstsq(X, y, rcond=None)[0].ravel()
    print(f"\nleast squares (closed form): intercept = {exact[0]:.4f}, "
          f"slope = {exact[1]:.4f}")

    if args.plots:
        # Log scale: the MSE falls by orders of magnitude in the first steps, then
        # settles at the noise left by the best line (about 9 = 3^2); the gap to the
        # least-squares MSE shows how fast the steps close in on that line.
        best_mse = float(np.mean((X @ exact[:, None] - y) ** 2))
        gap = np.maximum(np.asarray(losses, dtype=np.float64) - best_mse, 1e-12)
        for path in (
                airi.viz.plot_loss_curves(
                    {"MSE": losses, "MSE above the least-squares minimum": gap},
                    f"{args.plots}/linear_regression_loss.png",
                    title=f"linear regression: MSE per step (least squares: "
                          f"{best_mse:.2f})", xlabel="gradient step", log_scale=True),
                airi.viz.plot_line_fit(
                    X[:, 1], y, {"airi (gradient descent)": w_hat,
                                 "least squares": exact},
                    f"{args.plots}/linear_regression_fit.png",
                    title="y = 5 + 3x + noise: the fitted line")):
            print(f"wrote {path}")
    return {"w_hat": w_hat, "w_hat_bias_variant": w_bias, "losses": losses,
            "least_squares": exact}


if __name__ == "__main__":
    main(sys.argv[1:])
