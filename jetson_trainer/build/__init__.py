"""The offline build: data → trained Keras model → verified TFLite variants → signed bundle.

    data.py           data sets on disk, normalisation, the detector's training statistics
    architectures.py  the Keras networks (`seed`: seed 000's; `compact`: for a Pi Zero 2W)
    rocket.py         the long-window front-end: fixed random dilated convolutions + a head
    anomaly.py        cold start: a Mahalanobis anomaly model from the healthy class alone
    class_growth.py   a type learns the fault classes technicians name: the class list grows
    anomaly_head.py   a grown classifier's second output: unknown faults stay `anomaly`
    train.py          initial training and fine-tuning (imports TensorFlow when called)
    convert.py        Keras → TFLite (int8, float16, float32) and the checks each must pass
    interpreter.py    the one LiteRT interpreter the trainer's checks run a .tflite with
    artifacts.py      manifest, signed bundle and the files beside it
    pipeline.py       train → convert → verify → bundle → report; fine-tune → child bundle
    scores.py         classification metrics (accuracy, macro-F1, confusion) as plain dicts
    plots.py          PNG figures for the report
    model_card.py     `model_card.md` beside each bundle
    keys.py           Ed25519 signing keys
    rotation.py       a new signing key announced by a record signed with the old (`rotate-key`)
    energy.py         board power while training (`PowerMeter`, a Worker reading tegrastats)

No thread here but `PowerMeter`'s; the commands (`train`, `finetune`, `evaluate`) and the
daemon's fine-tunes call in.
"""
