"""The one place that knows llama-cpp-python's internals: its ctypes bindings (`llama_cpp.llama_cpp`),
the private attributes of `Llama` (`_model`, `_ctx`...), llama.cpp's log callback, and how a model
file is loaded safely. Everything else uses these modules and `Llama`'s public methods, so the next
llama-cpp-python upgrade touches this package only (tests/test_layers.py enforces it).

    log          llama.cpp's log into ours, its error lines kept for messages, diversions (quantize)
    load         every model load: a child-process first load, then `Llama` with its errors in one line
    model        token pieces, BOS/EOG, model flags, KV memory, logits and batches on a loaded model
    sampling     llama.cpp's sampler chain and the grammar sampler the engine drives
    session      a bare model + context with an eval callback (imatrix)
    ggml_tensor  a ctypes mirror of ggml's tensor struct, read inside that callback
    quantize     llama_model_quantize and its parameter structs
    system       what the build can do (backends, GPU offload), for `edge-ai doctor`
    rpc          llama.cpp's RPC backend: layers on other machines' servers, and the server itself
"""
