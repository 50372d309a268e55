"""Model cards of the demo models (``demo.py``, ``demo_torch.py``): what each one is, from
what it learned, what it is for and what it must not be used for.

The cards state no measured numbers of their own: ``demo_card(name, metrics=...)`` records
results that the caller measured, with ``data`` saying on what.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from openmaas.registry.card_schema import SCHEMA_VERSION
from openmaas.registry.cards import validate_card
from openmaas.registry.demo_cards_text import language_model_cards

__all__ = ["DEMO_CARD_NAMES", "demo_card"]

_DEMO = (
    "A demonstration model that OpenMaaS trains when it first starts, in seconds, on the "
    "machine that runs it; nothing is downloaded."
)
_DEMO_USE = (
    "Trying and testing OpenMaaS: publishing, inference over its APIs, explanations and "
    "model cards, on a small model whose behaviour is easy to check."
)
_DEMO_USERS = ["developers and operators trying OpenMaaS", "people learning machine learning"]
_NO_HOLD_OUT = (
    "The demo holds no data out: it trains on every sample. Unless the results say otherwise, "
    "they were measured on those same samples, so they overstate how well the model does on "
    "new data; cross-validation would give a fair estimate."
)
_SKLEARN = "https://scikit-learn.org/stable/datasets/toy_dataset.html"


def _section(text: str, **fields: Any) -> dict[str, Any]:
    return {"text": text, **fields}


def _breast_cancer() -> dict[str, Any]:
    data = "Breast Cancer Wisconsin (Diagnostic), scikit-learn's copy"
    description = (
        "212 malignant and 357 benign fine needle aspirates of breast masses; 30 features: "
        "the mean, standard error and worst value of 10 measures of the cell nuclei seen in "
        "a digitised image (radius, texture, perimeter, area, smoothness, compactness, "
        "concavity, concave points, symmetry, fractal dimension)"
    )
    return {
        "model_details": _section(
            f"{_DEMO} A random forest that reads 30 measurements of a breast mass biopsy in "
            "'float_input' FP32 [batch, 30] and returns the class (0 malignant, 1 benign) "
            "and the probabilities of both classes.",
            name="breast-cancer",
            type="Random forest classifier (scikit-learn RandomForestClassifier: 50 trees, "
            "maximum depth 8, random_state 0), exported to ONNX by skl2onnx",
            license="Apache-2.0",
            authors=["OpenMaaS (demo model)"],
            references=[
                "https://archive.ics.uci.edu/ml/datasets/breast+cancer+wisconsin+(diagnostic)",
                _SKLEARN,
            ],
        ),
        "intended_use": _section(
            f"{_DEMO_USE} **Not for clinical use**: this model must not be used to diagnose, "
            "screen for or rule out cancer, nor for any decision about a person's health.",
            primary_uses=["demonstrating and testing OpenMaaS with a tabular classifier"],
            primary_users=_DEMO_USERS,
            out_of_scope=[
                "diagnosis, screening or triage of real patients",
                "any medical, insurance or other decision about a person",
                "samples prepared, imaged or measured differently from the original study",
            ],
        ),
        "factors": _section(
            "The samples come from one source, the University of Wisconsin (dataset by "
            "William H. Wolberg, W. Nick Street and Olvi L. Mangasarian, 1995). The data "
            "record no age, ethnicity or other patient attributes, so performance across "
            "patient groups cannot be measured; nor can the effect of other laboratories, "
            "imaging equipment or sample preparation.",
            relevant_factors=["patient population", "laboratory and imaging equipment"],
        ),
        "metrics": _section(
            "Accuracy: the share of samples whose predicted class is right. For anything "
            "resembling screening, the rate of missed malignant cases (false negatives) "
            "matters more than accuracy; the demo does not report it.",
            measures=[{"name": "accuracy", "description": "share of correct predictions"}],
            decision_thresholds="The class is the more probable one (0.5); no threshold is tuned.",
        ),
        "evaluation_data": _section(
            _NO_HOLD_OUT,
            datasets=[{"name": data, "size": 569, "description": "the training samples"}],
        ),
        "training_data": _section(
            f"scikit-learn's copy of the UCI Breast Cancer Wisconsin (Diagnostic) data: "
            f"{description}.",
            datasets=[{"name": data, "size": 569, "description": description}],
            preprocessing="Features cast to 32-bit floats; no scaling or selection.",
        ),
        "quantitative_analyses": _section("Results per patient group cannot be computed."),
        "ethical_considerations": _section(
            "The data are medical measurements of real patients, published for research "
            "without identifiers. Used as a diagnosis, a model like this could miss cancers "
            "or cause needless worry and procedures.",
            risks=["misuse as a medical diagnosis"],
            mitigations=["this card and the model's description say it is not for clinical use"],
        ),
        "caveats_and_recommendations": _section(
            "569 samples from one source are far too few to show how the model would do on "
            "other patients. Use it to try OpenMaaS, never on people. See the UCI Machine "
            "Learning Repository for the data's terms of use.",
            caveats=["not validated on any other data", "no data held out"],
            recommendations=["do not use for any decision about a person's health"],
        ),
    }


def _diabetes() -> dict[str, Any]:
    data = "Diabetes (Efron et al., 2004), scikit-learn's copy"
    description = (
        "442 diabetes patients; 10 baseline variables (age, sex, body mass index, average "
        "blood pressure and six blood serum measurements), each mean-centred and scaled; the "
        "target is a quantitative measure of disease progression one year after baseline"
    )
    return {
        "model_details": _section(
            f"{_DEMO} Gradient-boosted regression trees that read 10 baseline variables of a "
            "diabetes patient in 'float_input' FP32 [batch, 10] (scaled as in scikit-learn's "
            "copy of the data) and return a measure of disease progression a year later in "
            "'variable' FP32 [batch, 1]. With 10 features it is the demo to compare every "
            "SHAP explainer on: exact Shapley, TreeSHAP, kernel and permutation.",
            name="diabetes",
            type="Gradient boosting regressor (scikit-learn GradientBoostingRegressor: 100 "
            "trees of depth 3, learning rate 0.1, random_state 0), exported to ONNX by skl2onnx",
            license="Apache-2.0",
            authors=["OpenMaaS (demo model)"],
            references=["https://www4.stat.ncsu.edu/~boos/var.select/diabetes.html", _SKLEARN],
        ),
        "intended_use": _section(
            f"{_DEMO_USE} **Not for clinical use**: it must not inform any decision about a "
            "patient's care.",
            primary_uses=["demonstrating and comparing explanation methods on a regressor"],
            primary_users=_DEMO_USERS,
            out_of_scope=["prognosis or treatment of real patients", "any decision about a person"],
        ),
        "factors": _section(
            "The data come from one study; age and sex are features, but there are too few "
            "patients to measure the model's error per group with any confidence.",
            relevant_factors=["age", "sex", "the study population"],
        ),
        "metrics": _section(
            "R² (coefficient of determination): the share of the target's variance the "
            "predictions explain; 1 is perfect, 0 is no better than the mean.",
            measures=[{"name": "r2", "description": "coefficient of determination"}],
        ),
        "evaluation_data": _section(
            _NO_HOLD_OUT,
            datasets=[{"name": data, "size": 442, "description": "the training samples"}],
        ),
        "training_data": _section(
            f"scikit-learn's copy of the diabetes data: {description}.",
            datasets=[{"name": data, "size": 442, "description": description}],
            preprocessing="The features as scikit-learn ships them (scaled), as 32-bit floats.",
        ),
        "quantitative_analyses": _section("Results per patient group cannot be computed."),
        "ethical_considerations": _section(
            "Medical measurements of real patients, published for research without "
            "identifiers. Read as a prognosis, a model like this could mislead care.",
            risks=["misuse as a medical prognosis"],
            mitigations=["this card and the model's description say it is not for clinical use"],
        ),
        "caveats_and_recommendations": _section(
            "442 patients from one study, no data held out: the results overstate how well it "
            "would do on other patients. Use it to try OpenMaaS and its explanations only.",
            caveats=["no data held out", "one small study"],
            recommendations=["do not use for any decision about a person's health"],
        ),
    }


def _digits_data(held_out: bool) -> dict[str, Any]:
    description = (
        "8x8 images of handwritten digits 0-9 (174 to 183 each); each pixel counts the ink in a "
        "4x4 block of a 32x32 bitmap, 0 to 16. scikit-learn's copy is the test set of the UCI "
        "Optical Recognition of Handwritten Digits data, written by 13 people"
    )
    used = (
        "1,437 of them: every image but every fifth, which is held out"
        if held_out
        else "all of them"
    )
    return _section(
        f"scikit-learn's handwritten digits: 1,797 {description}. The model learned from {used}.",
        datasets=[{"name": "scikit-learn digits", "size": 1797, "description": description}],
    )


def _digits_card(name: str, summary: str, kind: str, held_out: bool) -> dict[str, Any]:
    evaluation = (
        _section(
            "Every fifth image (index divisible by 5), 360 images, is held out of training; "
            "results measured on it estimate accuracy on unseen images by the same writers.",
            datasets=[{"name": "scikit-learn digits, every fifth image", "size": 360}],
        )
        if held_out
        else _section(_NO_HOLD_OUT, datasets=[{"name": "scikit-learn digits", "size": 1797}])
    )
    return {
        "model_details": _section(
            f"{_DEMO} {summary}",
            name=name,
            type=kind,
            license="Apache-2.0",
            authors=["OpenMaaS (demo model)"],
            references=[
                "https://archive.ics.uci.edu/ml/datasets/Optical+Recognition+of+Handwritten+Digits",
                _SKLEARN,
            ],
        ),
        "intended_use": _section(
            f"{_DEMO_USE} It recognises single digits in 8x8 images made like its data.",
            primary_uses=["demonstrating and testing OpenMaaS with an image classifier"],
            primary_users=_DEMO_USERS,
            out_of_scope=[
                "reading digits from photos, scans or forms without the same preprocessing",
                "letters, several digits at once, or anything that is not a digit",
                "decisions that matter, such as reading amounts or identity numbers",
            ],
        ),
        "factors": _section(
            "Handwriting style (only 13 writers), how the images were scanned and reduced, "
            "and which digit it is (some digits look alike).",
            relevant_factors=["writer", "image preprocessing", "digit class"],
            evaluation_factors=["digit class"],
        ),
        "metrics": _section(
            "Accuracy: the share of images whose digit is right. Per-digit accuracy shows "
            "which digits the model confuses.",
            measures=[{"name": "accuracy", "description": "share of correct predictions"}],
            decision_thresholds="The digit is the most probable of the 10.",
        ),
        "evaluation_data": evaluation,
        "training_data": _digits_data(held_out),
        "quantitative_analyses": _section("Per-writer results cannot be computed."),
        "ethical_considerations": _section(
            "The images hold no personal data beyond handwriting. Misreading digits "
            "matters only if the model is used outside its demo purpose.",
            risks=["misuse for reading real documents"],
        ),
        "caveats_and_recommendations": _section(
            "Only 13 writers and tiny images: do not expect it to read other handwriting. "
            "Images must be 8x8 with values 0-16 made the same way. Pixel order is row by row.",
            caveats=["13 writers", "8x8 inputs only"],
            recommendations=["train on your own data for real digit recognition"],
        ),
    }


def _sequence_lstm() -> dict[str, Any]:
    generator = (
        "straight lines that start uniformly in [-1, 1], fall, stay flat or rise by 0.05 to "
        "0.15 per step, plus Gaussian noise of standard deviation 0.03; the three trends are "
        "equally likely (openmaas.registry.demo_torch.trend_sequences)"
    )
    return {
        "model_details": _section(
            f"{_DEMO} An LSTM that tells whether a sequence of numbers is falling, flat or "
            "rising: the numbers in 'values' FP32 [batch, steps, 1]; it returns the trend in "
            "'trend' INT64 [batch] (0 falling, 1 flat, 2 rising) and the probabilities of the "
            "3 trends in 'probabilities' FP32 [batch, 3].",
            name="sequence-lstm",
            type="Recurrent neural network (PyTorch LSTM of 32 units read at the last step, "
            "then a dense layer to 3 classes; 4,579 parameters), exported to ONNX (opset 17)",
            license="Apache-2.0",
            authors=["OpenMaaS (demo model)"],
        ),
        "intended_use": _section(
            f"{_DEMO_USE} It shows a sequence model with a variable number of steps.",
            primary_uses=["demonstrating and testing OpenMaaS with a sequence model"],
            primary_users=_DEMO_USERS,
            out_of_scope=["real time series: prices, sensors, health or any forecasting"],
        ),
        "factors": _section(
            "Sequence length, slope, noise level and value range: each was drawn from a fixed "
            "range in training (6 to 20 steps, slopes 0.05 to 0.15 per step, noise 0.03).",
            relevant_factors=["sequence length", "slope", "noise", "value range"],
        ),
        "metrics": _section(
            "Accuracy: the share of sequences whose trend is right.",
            measures=[{"name": "accuracy", "description": "share of correct predictions"}],
            decision_thresholds="The trend is the most probable of the 3.",
        ),
        "evaluation_data": _section(
            "None is kept from training; the generator makes fresh sequences with other seeds, "
            "which come from the same distribution as the training data."
        ),
        "training_data": _section(
            f"Synthetic sequences made in code: {generator}. 300 batches of 64 (19,200 "
            "sequences), each batch of one length from 6 to 20 steps; Adam, learning rate "
            "0.01, seed 0.",
            datasets=[
                {"name": "synthetic trend sequences", "size": 19200, "description": generator}
            ],
        ),
        "quantitative_analyses": _section("Results by length and slope would show its limits."),
        "ethical_considerations": _section(
            "Synthetic data only: no personal data and no people are involved."
        ),
        "caveats_and_recommendations": _section(
            "Only straight noisy lines were seen: slopes between 0 and 0.05 per step, curves, "
            "jumps, seasonality, sequences longer than 20 steps or values far outside the "
            "trained range give answers no one has checked.",
            caveats=["synthetic data only", "untested beyond 20 steps"],
            recommendations=["do not use on real time series"],
        ),
    }


_BUILDERS: dict[str, Callable[[], dict[str, Any]]] = {
    "breast-cancer": _breast_cancer,
    "diabetes": _diabetes,
    "digits": lambda: _digits_card(
        "digits",
        "Logistic regression on 8x8 handwritten digits: 64 pixel intensities (0-16) in "
        "'float_input' FP32 [batch, 64]; returns the digit and the probabilities of the 10.",
        "Multinomial logistic regression after standardisation (scikit-learn StandardScaler "
        "and LogisticRegression, max_iter 2000, default L2 penalty), exported to ONNX by skl2onnx",
        held_out=False,
    ),
    "digits-cnn": lambda: _digits_card(
        "digits-cnn",
        "A small CNN on 8x8 handwritten digits: pixel intensities (0-16) in 'pixels' FP32 "
        "[batch, 1, 8, 8]; returns the digit in 'digit' INT64 [batch] and the probabilities "
        "of the 10 digits in 'probabilities' FP32 [batch, 10].",
        "Convolutional neural network (PyTorch: two 3x3 convolutions of 8 and 16 channels, "
        "2x2 max pooling, dense layers of 32 and 10 units; 9,802 parameters; Adam, learning "
        "rate 0.01, 8 epochs of batches of 64, seed 0), exported to ONNX (opset 17)",
        held_out=True,
    ),
    "sequence-lstm": _sequence_lstm,
    **language_model_cards(),
}
# What the caller's metrics were measured on, unless it says otherwise.
_RESULT_DATA = {
    "breast-cancer": "the 569 training samples (none held out)",
    "diabetes": "the 442 training samples (none held out)",
    "digits": "the 1,797 training images (none held out)",
    "digits-cnn": "the 360 held-out images (every fifth)",
}
DEMO_CARD_NAMES = tuple(_BUILDERS)


def demo_card(
    name: str, metrics: Mapping[str, float] | None = None, *, data: str | None = None
) -> dict[str, Any]:
    """The card of demo model ``name`` (``KeyError`` for another name), with ``metrics``
    (say ``{"accuracy": 0.97}``, measured by the caller on ``data``; by default the data in
    the card's evaluation section) as its quantitative results."""
    if name not in _BUILDERS:
        raise KeyError(f"no demo model {name!r}; the demo models are {', '.join(_BUILDERS)}")
    card = {"schema_version": SCHEMA_VERSION, **_BUILDERS[name]()}
    analyses = card["quantitative_analyses"]
    where = data or _RESULT_DATA.get(name)
    if metrics:
        results = [{"metric": key, "value": float(value)} for key, value in metrics.items()]
        for result in results:
            if where:
                result["data"] = where[:200]
        analyses["results"] = results
        measured = f" on {where}" if where else ""
        lead = f"The results in this card were measured by OpenMaaS{measured}."
    else:
        lead = "This card records no measured results."
    analyses["text"] = f"{lead} {analyses['text']}"
    return validate_card(card)
