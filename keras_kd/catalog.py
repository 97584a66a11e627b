"""What `keras-kd methods` prints, stored as plain data.

`keras_kd.recipes` describes each method from its loss class
(`recipes.describe`, `recipes.describe_scheme`), so reading it imports
Keras, and with the TensorFlow backend Keras imports TensorFlow: about four
seconds and its start-up logs before the first line. The command prints this
copy instead and answers at once. `tests/test_cli.py` checks it against the
recipes; after changing a recipe, a loss's defaults or a paper line, rewrite
it with `python -m keras_kd.catalog`.
"""

METHODS = {
    "ab": {
        "loss": "ABLoss",
        "paper": "Heo et al., \"Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons\", AAAI 2019.",
        "weight": 1.0,
        "student_loss_weight": 1.0,
        "constants": {"margin": 1.0},
        "features": "preact",
        "connector": "auto",
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 1.0,
    },
    "at": {
        "loss": "AttentionTransferLoss",
        "paper": "Zagoruyko & Komodakis, \"Paying More Attention to Attention\", ICLR 2017.",
        "weight": 1000.0,
        "student_loss_weight": 1.0,
        "constants": {"p": 2},
        "features": "stages",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 1000.0,
        "combined_student_loss_weight": 1.0,
    },
    "cc": {
        "loss": "CorrelationCongruenceLoss",
        "paper": "Peng et al., \"Correlation Congruence for Knowledge Distillation\", ICCV 2019.",
        "weight": 0.02,
        "student_loss_weight": 1.0,
        "constants": {"gamma": 0.4, "order": 2},
        "features": "embedding",
        "connector": "linear",
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 0.02,
        "combined_student_loss_weight": 1.0,
    },
    "crd": {
        "loss": "CRDLoss",
        "paper": "Tian, Krishnan & Isola, \"Contrastive Representation Distillation\", ICLR 2020.",
        "weight": 0.8,
        "student_loss_weight": 1.0,
        "constants": {
            "num_data": None,
            "feature_dim": 128,
            "num_negatives": 16384,
            "temperature": 0.07,
            "momentum": 0.5,
        },
        "features": "embedding",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 0.8,
        "combined_student_loss_weight": 1.0,
    },
    "dist": {
        "loss": "DISTLoss",
        "paper": "Huang et al., \"Knowledge Distillation from A Stronger Teacher\", NeurIPS 2022.",
        "weight": 1.0,
        "student_loss_weight": 1.0,
        "constants": {"beta": 1.0, "gamma": 1.0, "temperature": 1.0},
        "features": "outputs (logits)",
        "connector": None,
        "source": "Huang et al. 2022, ImageNet setting of the authors' code",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 1.0,
    },
    "dkd": {
        "loss": "DKDLoss",
        "paper": "Zhao et al., \"Decoupled Knowledge Distillation\", CVPR 2022.",
        "weight": 1.0,
        "student_loss_weight": 1.0,
        "constants": {"alpha": 1.0, "beta": 8.0, "temperature": 4.0},
        "features": "outputs (logits)",
        "connector": None,
        "source": "mdistiller configs/cifar100/dkd (DKD.WARMUP 20 of SOLVER.EPOCHS 240: linear warm-up of the weight)",
        "schedule": "linear warm-up over the first 8.3% of epochs (20 of 240 in the paper), then constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 1.0,
    },
    "fitnet": {
        "loss": "FitNetLoss",
        "paper": "Romero et al., \"FitNets: Hints for Thin Deep Nets\", ICLR 2015.",
        "weight": 100.0,
        "student_loss_weight": 1.0,
        "constants": {},
        "features": "middle stage",
        "connector": "auto",
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 100.0,
        "combined_student_loss_weight": 1.0,
    },
    "fsp": {
        "loss": "FSPLoss",
        "paper": "Yim et al., \"A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer Learning\", CVPR 2017.",
        "weight": 50.0,
        "student_loss_weight": 1.0,
        "constants": {},
        "features": "stages",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 50.0,
        "combined_student_loss_weight": 1.0,
    },
    "ft": {
        "loss": "FactorTransferLoss",
        "paper": "Kim, Park & Kwak, \"Paraphrasing Complex Network: Network Compression via Factor Transfer\", NeurIPS 2018.",
        "weight": 200.0,
        "student_loss_weight": 1.0,
        "constants": {"rate": 0.5, "p": 1},
        "features": "last stage",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 200.0,
        "combined_student_loss_weight": 1.0,
    },
    "function_matching": {
        "loss": "KDLoss",
        "paper": "Beyer et al., \"Knowledge distillation: A good teacher is patient and consistent\", CVPR 2022.",
        "weight": 1.0,
        "student_loss_weight": 0.0,
        "constants": {"temperature": 1.0, "from_logits": True},
        "features": "outputs (logits)",
        "connector": None,
        "source": "Beyer et al. 2022, function matching (big_vision configs/proj/distill/bit_i1k.py: mixup p=1.0 on both models, distance kl t=1.0, no label loss); long schedules are the caller's",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 0.0,
    },
    "gram": {
        "loss": "GramLoss",
        "paper": "Gram-matrix (style) distillation, after the style loss of Gatys, Ecker & Bethge, \"Image Style Transfer Using Convolutional Neural Networks\", CVPR 2016.",
        "weight": 50.0,
        "student_loss_weight": 1.0,
        "constants": {},
        "features": "stages",
        "connector": "auto",
        "source": "keras_kd's choice (no published KD setting): FSP's weight, see GramLoss",
        "schedule": "constant",
        "combined_weight": 50.0,
        "combined_student_loss_weight": 1.0,
    },
    "kd": {
        "loss": "KDLoss",
        "paper": "Hinton et al., \"Distilling the Knowledge in a Neural Network\", 2015.",
        "weight": 0.9,
        "student_loss_weight": 0.1,
        "constants": {"temperature": 4.0, "from_logits": True},
        "features": "outputs (logits)",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 1.0,
    },
    "logit_mse": {
        "loss": "LogitMSELoss",
        "paper": "Ba & Caruana, \"Do Deep Nets Really Need to be Deep?\", NeurIPS 2014; Tang et al., \"Distilling Task-Specific Knowledge from BERT into Simple Neural Networks\", arXiv:1903.12136, 2019.",
        "weight": 1.0,
        "student_loss_weight": 0.0,
        "constants": {},
        "features": "outputs (logits)",
        "connector": None,
        "source": "Ba & Caruana 2014 (logit regression alone)",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 0.0,
    },
    "nst": {
        "loss": "NSTLoss",
        "paper": "Huang & Wang, \"Like What You Like: Knowledge Distill via Neuron Selectivity Transfer\", arXiv:1707.01219, 2017.",
        "weight": 50.0,
        "student_loss_weight": 1.0,
        "constants": {},
        "features": "stages",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 50.0,
        "combined_student_loss_weight": 1.0,
    },
    "ofd": {
        "loss": "OFDLoss",
        "paper": "Heo et al., \"A Comprehensive Overhaul of Feature Distillation\", ICCV 2019.",
        "weight": 0.001,
        "student_loss_weight": 1.0,
        "constants": {},
        "features": "preact",
        "connector": "conv1x1",
        "source": "Heo et al. 2019 CIFAR-100 code (train_with_distillation.py: / batch_size / 1000, stage i of n weighted 2^(i-n)); mdistiller configs OFD.LOSS.FEAT_WEIGHT 0.001",
        "schedule": "constant",
        "combined_weight": 0.001,
        "combined_student_loss_weight": 1.0,
    },
    "pkt": {
        "loss": "PKTLoss",
        "paper": "Passalis & Tefas, \"Learning Deep Representations with Probabilistic Knowledge Transfer\", ECCV 2018.",
        "weight": 30000.0,
        "student_loss_weight": 1.0,
        "constants": {"eps": 1e-07},
        "features": "embedding",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 30000.0,
        "combined_student_loss_weight": 1.0,
    },
    "reviewkd": {
        "loss": "ReviewKDLoss",
        "paper": "Chen, Liu, Zhao & Jia, \"Distilling Knowledge via Knowledge Review\", CVPR 2021.",
        "weight": 5.0,
        "student_loss_weight": 1.0,
        "constants": {"mid_channels": None, "levels": (4, 2, 1)},
        "features": "stages and embedding",
        "connector": None,
        "source": "ReviewKD CIFAR-100/script/reviewKD.sh and mdistiller configs/cifar100/reviewkd.yaml, resnet32x4 -> resnet8x4 (REVIEWKD.WARMUP_EPOCHS 20 of 240: linear warm-up of the weight)",
        "schedule": "linear warm-up over the first 8.3% of epochs (20 of 240 in the paper), then constant",
        "combined_weight": 5.0,
        "combined_student_loss_weight": 1.0,
    },
    "rkd": {
        "loss": "RKDLoss",
        "paper": "Park et al., \"Relational Knowledge Distillation\", CVPR 2019.",
        "weight": 1.0,
        "student_loss_weight": 1.0,
        "constants": {"distance_weight": 25.0, "angle_weight": 50.0},
        "features": "embedding",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 1.0,
    },
    "sp": {
        "loss": "SimilarityPreservingLoss",
        "paper": "Tung & Mori, \"Similarity-Preserving Knowledge Distillation\", ICCV 2019.",
        "weight": 3000.0,
        "student_loss_weight": 1.0,
        "constants": {},
        "features": "last stage",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 3000.0,
        "combined_student_loss_weight": 1.0,
    },
    "vid": {
        "loss": "VIDLoss",
        "paper": "Ahn et al., \"Variational Information Distillation for Knowledge Transfer\", CVPR 2019.",
        "weight": 1.0,
        "student_loss_weight": 1.0,
        "constants": {"mid_channels": None, "init_pred_var": 5.0, "eps": 1e-05},
        "features": "stages",
        "connector": None,
        "source": "RepDistiller scripts/run_cifar_distill.sh",
        "schedule": "constant",
        "combined_weight": 1.0,
        "combined_student_loss_weight": 1.0,
    },
}

SCHEMES = {
    "adversarial": {
        "build": "keras_kd.schemes.adversarial.AdversarialDistiller",
        "paper": "Xu, Hsu & Huang, \"Training Shallow and Thin Networks for Acceleration via Knowledge Distillation with Conditional Adversarial Networks\", ICLR 2018 workshop (arXiv:1709.00513, 2017; later titled \"Learning Loss for Knowledge Distillation with Conditional Adversarial Networks\").",
        "trains": "teacher -> student, plus a discriminator",
        "constants": {"student_loss_weight": 1.0, "adversarial_weight": 1.0, "conditional": True},
        "source": "the paper's setting (the defaults of `build`)",
    },
    "boundary": {
        "build": "keras_kd.schemes.boundary.BoundarySupportingDistiller",
        "paper": "Heo, Lee, Yun & Choi, \"Knowledge Distillation with Adversarial Samples Supporting Decision Boundary\", AAAI 2019 (BSS distillation).",
        "trains": "teacher -> student, plus BSS samples",
        "constants": {
            "student_loss_weight": 1.0,
            "num_steps": 10,
            "step_size": 0.3,
            "bss_weight": 2.0,
            "bss_fraction": 0.25,
            "temperature": 3.0,
            "target": "sample",
        },
        "source": "the paper's setting (the defaults of `build`)",
    },
    "dgkd": {
        "build": "keras_kd.schemes.teacher_assistant.TeacherAssistant",
        "paper": "Mirzadeh, Farajtabar, Li, Levine, Matsukawa & Ghasemzadeh, \"Improved Knowledge Distillation via Teacher Assistant\", AAAI 2020 (TAKD); and Son, Na, Choi & Hwang, \"Densely Guided Knowledge Distillation using Multiple Teacher Assistants\", ICCV 2021 (DGKD).",
        "trains": "teacher -> assistant(s) -> student, each model taught by every larger one, one teacher dropped per mini-batch",
        "constants": {"terms": "kd", "dense": True, "drop_rate": 0.0, "drop_count": 1},
        "source": "Son et al. 2021 (DGKD): stochastic teaching drops a teacher or teacher assistant per mini-batch; the kd recipe per teacher, summed",
    },
    "grafting": {
        "build": "keras_kd.schemes.grafting.GraftingTrainer",
        "paper": "Meng, Cheng, Li, Xu, Ji, Sun & Lu, \"Filter Grafting for Deep Neural Networks\", CVPR 2020 (arXiv:2001.05868); reference code: https://github.com/fxmeng/filter-grafting (`grafting_cifar/grafting.py`).",
        "trains": "K >= 2 peers of one architecture from different seeds",
        "constants": {
            "every": 1,
            "bins": 10,
            "a": 0.4,
            "c": 500.0,
            "rounding": 2,
            "include_dense": False,
            "graft": True,
        },
        "source": "Meng et al. 2020 reference code (fxmeng/filter-grafting: --a 0.4 --c 500, entropy of 10 bins)",
    },
    "mimic": {
        "build": "keras_kd.recipes.mimic_distiller",
        "paper": "Shallow \"mimic\" net with a linear bottleneck, after Ba & Caruana, \"Do Deep Nets Really Need to be Deep?\", NeurIPS 2014.",
        "trains": "a teacher -> a new shallow mimic net, on the teacher's logits alone",
        "constants": {"hidden_units": 2000, "bottleneck": 250},
        "source": "Ba & Caruana 2014 (logit regression); k=250 as their TIMIT SNN-MIMIC (not checked offline), hidden width ours",
    },
    "mutual": {
        "build": "keras_kd.schemes.mutual.MutualLearning",
        "paper": "Zhang, Xiang, Hospedales & Lu, \"Deep Mutual Learning\", CVPR 2018.",
        "trains": "K >= 2 peers, all trained",
        "constants": {"temperature": 1.0, "kd_weight": 1.0},
        "source": "the paper's setting (the defaults of `build`)",
    },
    "noisy_student": {
        "build": "keras_kd.schemes.noisy_student.NoisyStudent",
        "paper": "Xie, Luong, Hovy & Le, \"Self-training with Noisy Student improves ImageNet classification\", CVPR 2020 (Noisy Student).",
        "trains": "teacher -> equal-or-larger noised students (dropout 0.5, stochastic depth 0.2), in rounds",
        "constants": {
            "rounds": 3,
            "pseudo_labels": "soft",
            "temperature": 1.0,
            "threshold": 0.3,
            "balance": True,
            "allow_smaller_student": False,
            "predict_batch_size": 256,
        },
        "source": "Xie et al. 2020, google-research/noisystudent (ImageNet: soft labels at T=1, --min_threshold=0.3, class balancing, 3 rounds)",
    },
    "self_distillation": {
        "build": "keras_kd.schemes.self_distillation.SelfDistillation",
        "paper": "Zhang, Song, Gao, Chen, Bao & Ma, \"Be Your Own Teacher: Improve the Performance of Convolutional Neural Networks via Self Distillation\", ICCV 2019.",
        "trains": "one network with auxiliary heads",
        "constants": {"temperature": 3.0, "alpha": 0.3, "beta": 0.03},
        "source": "the paper's setting (the defaults of `build`)",
    },
    "teacher_assistant": {
        "build": "keras_kd.schemes.teacher_assistant.TeacherAssistant",
        "paper": "Mirzadeh, Farajtabar, Li, Levine, Matsukawa & Ghasemzadeh, \"Improved Knowledge Distillation via Teacher Assistant\", AAAI 2020 (TAKD); and Son, Na, Choi & Hwang, \"Densely Guided Knowledge Distillation using Multiple Teacher Assistants\", ICCV 2021 (DGKD).",
        "trains": "teacher -> assistant(s) -> student, each stage distilled from the one before, same terms and epochs",
        "constants": {"terms": "kd", "dense": False, "drop_rate": 0.0},
        "source": "Mirzadeh et al. 2020 (TAKD); their code searches T in {1, 2, 5, 10, 15, 20} and lambda in [0.05, 1] per stage (no single published value), so the stages use the kd recipe (T=4, 0.9 KD + 0.1 CE)",
    },
    "teacher_free": {
        "build": "keras_kd.schemes.teacher_free.virtual_teacher_distiller",
        "paper": "Yuan, Tay, Li, Wang & Feng, \"Revisiting Knowledge Distillation via Label Smoothing Regularization\", CVPR 2020 (Teacher-free KD, Tf-KD).",
        "trains": "a student, no teacher (virtual)",
        "constants": {"correct_prob": 0.9, "temperature": 20.0, "student_loss_weight": 0.9},
        "source": "the paper's setting (the defaults of `build`)",
    },
}


def current():
    """(methods, schemes) as `keras_kd.recipes` describes them now (imports Keras)."""
    from keras_kd import recipes

    methods = {name: recipes.describe(name) for name in recipes.names()}
    schemes = {name: recipes.describe_scheme(name) for name in recipes.scheme_names()}
    return methods, schemes


def write(path=__file__):
    """Rewrites METHODS and SCHEMES in this file from `current()`."""
    import re
    from pathlib import Path

    methods, schemes = current()
    data = "".join(f"{name} = {_literal(value)}\n\n" for name, value in (("METHODS", methods), ("SCHEMES", schemes)))
    text = Path(path).read_text()
    text, count = re.subn(r"^METHODS = .*?\n\n(?=\ndef current)", lambda _: data, text, flags=re.S | re.M)
    if count != 1:
        raise ValueError(f"{path} has no METHODS ... SCHEMES block before `def current` to rewrite.")
    Path(path).write_text(text)


def _literal(value, depth=0):
    """`value` (dicts of strings, numbers, booleans and None) as Python source, one key a line."""
    import json

    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if not isinstance(value, dict):
        return repr(value)
    inline = "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    if len(inline) + 4 * depth <= 100 and all(not isinstance(v, dict) for v in value.values()):
        return inline
    pad = "    " * (depth + 1)
    items = "".join(f"{pad}{_literal(k)}: {_literal(v, depth + 1)},\n" for k, v in value.items())
    return "{\n" + items + "    " * depth + "}"


if __name__ == "__main__":
    write()
