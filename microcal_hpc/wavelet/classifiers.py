"""The classifier zoo of the wavelet arm: one scikit-learn Pipeline per short name.

Every model gets the same inputs (one feature set, Train rows) and returns a score per image for the
ROC: ``predict_proba`` where the model has it, else a logistic squashing of ``decision_function``
(:func:`scores`). Models that depend on feature scale (SVM, logistic regression, k-NN, MLP) start with
a StandardScaler fitted on the training rows only. Hyper-parameters are fixed here (no tuning on the
evaluation folds), chosen as sensible defaults for ~500 training images of 45-2,430 features; the sizes
(trees, iterations, histogram bins, hidden units, epochs) are, per classifier, the cheapest whose mean CV
AUC over 3 seeds is at most 0.005 below the best size's on both default feature sets, measured on the real
data (``bench/bench_classifier_sizes.py``; choice and effect in ``bench/README.md``):

==== ======================================================================================================
rf   RandomForest, 200 trees, sqrt(F) features per split, fully grown (the reference study's model family)
svm  StandardScaler + RBF SVC, C=1, gamma="scale"; score = sigmoid(decision_function) (SVC.predict's
     threshold 0 maps to 0.5; monotone, so the AUC is that of the decision values; not calibrated)
lr   StandardScaler + L2 logistic regression, C=0.01 (strong shrinkage: many more features than images)
knn  StandardScaler + 15 nearest neighbours, distance-weighted votes
nb   Gaussian naive Bayes (scale-free)
dt   one decision tree, depth <= 6, >= 5 images per leaf (an interpretable, weak reference)
mlp  StandardScaler + MLP, one hidden layer of 32 ReLU units, L2 alpha=1.0, Adam, 100 epochs (a fixed
     training length: scikit-learn's ConvergenceWarning, counted in metrics.json's fits_not_converged)
hgb  histogram gradient boosting, 100 trees of <= 15 leaves, 31 histogram bins per feature, learning rate
     0.1, L2 1.0, no early stopping
==== ======================================================================================================

Random states come from the ``seed`` argument, so a run is repeatable. Each fit runs single-threaded
(see :mod:`microcal_hpc.wavelet.evaluate`); parallelism comes from running the fits of all models side
by side.
"""
from __future__ import annotations

import numpy as np

from microcal_hpc.errors import ConfigError

CLASSIFIERS = ("rf", "svm", "lr", "knn", "nb", "dt", "mlp", "hgb")

def check_classifiers(names) -> list[str]:
    """The names if all are known; ConfigError naming the unknown ones otherwise."""
    names = list(names)
    unknown = [n for n in names if n not in CLASSIFIERS]
    if unknown:
        raise ConfigError(f"classify.classifiers: unknown classifier(s) {', '.join(unknown)}; "
                          f"known: {', '.join(CLASSIFIERS)}")
    if not names:
        raise ConfigError("classify.classifiers must not be empty")
    return names


def make_classifier(name: str, seed: int = 0):
    """A fresh, unfitted Pipeline for the classifier ``name`` (see the module docstring)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    check_classifiers([name])
    if name == "rf":
        steps = [("rf", RandomForestClassifier(n_estimators=200, max_features="sqrt", n_jobs=1, random_state=seed))]
    elif name == "svm":
        steps = [("scale", StandardScaler()), ("svm", SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed))]
    elif name == "lr":
        steps = [("scale", StandardScaler()), ("lr", LogisticRegression(C=0.01, max_iter=5000))]
    elif name == "knn":
        steps = [("scale", StandardScaler()), ("knn", KNeighborsClassifier(n_neighbors=15, weights="distance"))]
    elif name == "nb":
        steps = [("nb", GaussianNB())]
    elif name == "dt":
        steps = [("dt", DecisionTreeClassifier(max_depth=6, min_samples_leaf=5, random_state=seed))]
    elif name == "mlp":
        steps = [("scale", StandardScaler()),
                 ("mlp", MLPClassifier(hidden_layer_sizes=(32,), alpha=1.0, max_iter=100, random_state=seed))]
    else:  # hgb
        steps = [("hgb", HistGradientBoostingClassifier(learning_rate=0.1, max_iter=100, max_bins=31,
                                                        max_leaf_nodes=15, l2_regularization=1.0,
                                                        early_stopping=False, random_state=seed))]
    return Pipeline(steps)


def score_kind(model) -> str:
    """How :func:`scores` turns a fitted model's output into a score: predict_proba or decision_function."""
    return "predict_proba" if hasattr(model, "predict_proba") else "sigmoid(decision_function)"


def scores(model, X) -> np.ndarray:
    """Score of class 1 per row: P(class 1), or sigmoid(decision value) for models without probabilities."""
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        classes = list(model.classes_)
        return proba[:, classes.index(1)].astype(float)
    from scipy.special import expit

    return expit(np.asarray(model.decision_function(X), dtype=float))
