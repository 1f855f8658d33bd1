"""Deployment: BN folding, export of a model to torch.export / ONNX / TorchScript artifacts that carry their
input convention, loading and running those artifacts, and checks of what an exported graph materialises.

Layer: above models and data, below engine (``video-nl export`` and ``video-nl predict --model`` live in the
engine and call in here). ONNX support needs the optional ``export`` extra (``pip install -e .[export]``:
onnx, onnxruntime, onnxscript); everything else needs only torch. See docs/deploy.md.
"""
