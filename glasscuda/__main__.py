"""python -m glasscuda — what the commands are for."""

USAGE = """\
glasscuda: convolutional networks for glass defect inspection. Four commands:

  python -m glasscuda.train      train a network (binary: is the glass defective? multilabel: which
                                 defects and where? cifar10: the small-CNN preset) into --out
  python -m glasscuda.predict    score images with a trained checkpoint: one CSV row per image
                                 (probabilities and labels; --heatmaps for where the defects are)
  python -m glasscuda.evaluate   compare a predictions CSV with annotations: precision, recall, F1,
                                 threshold sweeps, operating points, calibration
  python -m glasscuda.export     write a checkpoint as an ONNX model, checked against glasscuda by
                                 onnxruntime (then predict --onnx scores with onnxruntime alone)

Each takes --help. A first run: python -m glasscuda.train (on built-in synthetic glass)."""


def main() -> int:
    print(USAGE)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
