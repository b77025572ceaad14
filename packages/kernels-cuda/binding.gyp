{
  # Built by scripts/build-native.mjs (the package's install script), which sets moa_with_cuda and the CUDA
  # paths. moa_cpu.node is always built; moa_cuda.node only when nvcc was found.
  "variables": {
    "moa_with_cuda%": 0,
    "moa_nvcc%": "nvcc",
    "moa_cuda_lib_dir%": "",
    "moa_cflags": ["-O3", "-std=c++17", "-fexceptions", "-fPIC", "-pthread", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-psabi"],
  },
  "target_defaults": {
    "include_dirs": ["src", "<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
    "cflags_cc": ["<@(moa_cflags)"],
    "ldflags": ["-pthread"],
    "conditions": [
      # Portable baseline (SSE4.2, 2009+ CPUs); matmul adds an AVX2/FMA path chosen at run time.
      # Never -march=native: the addon may be built on one machine and run on another.
      ["target_arch == 'x64' and OS != 'win'", { "cflags_cc": ["-march=x86-64-v2", "-mtune=generic"] }],
      ["OS == 'mac'", {
        "xcode_settings": {
          "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
          "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
          "GCC_OPTIMIZATION_LEVEL": "3",
          "MACOSX_DEPLOYMENT_TARGET": "11.0",
        },
      }],
      ["OS == 'win'", {
        "msvs_settings": { "VCCLCompilerTool": { "ExceptionHandling": 1, "AdditionalOptions": ["/std:c++17", "/O2"] } },
      }],
    ],
  },
  "targets": [
    {
      # The C++ reference of every op (src/cpu/<op>.cc), linked into both addons.
      "target_name": "moa_cpu_ops",
      "type": "static_library",
      "sources": [
        "src/cpu/thread_pool.cc",
        "src/cpu/half.cc",
        "src/cpu/matmul.cc",
        "src/cpu/embedding.cc",
        "src/cpu/rms_norm.cc",
        "src/cpu/rope.cc",
        "src/cpu/silu_mul.cc",
        "src/cpu/add.cc",
        "src/cpu/softmax.cc",
        "src/cpu/attention_prefill.cc",
        "src/cpu/attention_column_sums.cc",
        "src/cpu/kv_append.cc",
        "src/cpu/attention_decode.cc",
        "src/cpu/matmul_backward.cc",
        "src/cpu/rms_norm_backward.cc",
        "src/cpu/silu_mul_backward.cc",
        "src/cpu/attention_backward.cc",
        "src/cpu/cross_entropy.cc",
      ],
    },
    {
      "target_name": "moa_cpu",
      "dependencies": ["moa_cpu_ops"],
      "sources": ["src/binding/addon.cc", "src/binding/ops.cc", "src/binding/device.cc", "src/binding/backward.cc"],
    },
  ],
  "conditions": [
    ["moa_with_cuda == 1", {
      "targets": [
        {
          "target_name": "moa_cuda",
          "dependencies": ["moa_cpu_ops"],
          "defines": ["MOA_WITH_CUDA"],
          "sources": [
            "src/binding/addon.cc",
            "src/binding/ops.cc",
            "src/binding/device.cc",
            "src/binding/backward.cc",
            "src/cuda/device.cu",
            "src/cuda/matmul.cu",
            "src/cuda/embedding.cu",
            "src/cuda/rms_norm.cu",
            "src/cuda/rope.cu",
            "src/cuda/silu_mul.cu",
            "src/cuda/add.cu",
            "src/cuda/softmax.cu",
            "src/cuda/attention_prefill.cu",
            "src/cuda/attention_column_sums.cu",
            "src/cuda/kv_append.cu",
            "src/cuda/attention_decode.cu",
            "src/cuda/matmul_backward.cu",
            "src/cuda/rms_norm_backward.cu",
            "src/cuda/silu_mul_backward.cu",
            "src/cuda/cross_entropy.cu",
            "src/cuda/attention_backward.cu",
            "src/cuda/half_scale.cu",
            "src/cuda/half_pins.cu",
          ],
          "rules": [
            {
              "rule_name": "nvcc",
              "extension": "cu",
              "inputs": ["<(RULE_INPUT_PATH)", "src/cuda/cuda_ops.h", "src/cuda/check.cuh", "src/cuda/scratch.cuh", "src/cuda/widen.cuh", "src/cuda/kv_cache.cuh", "src/cuda/attention_common.cuh", "src/cuda/mma.cuh", "src/cuda/wgmma.cuh", "src/cuda/cublas.cuh", "src/cuda/backward_precision.cuh", "src/cuda/half_scale.cuh"],
              "outputs": ["<(INTERMEDIATE_DIR)/<(RULE_INPUT_ROOT).cu.o"],
              "message": "nvcc <(RULE_INPUT_PATH)",
              "process_outputs_as_sources": 1,
              "action": [
                "<(moa_nvcc)", "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-Isrc",
                "-gencode=arch=compute_80,code=sm_80",
                "-gencode=arch=compute_90a,code=sm_90a",
                "-c", "<(RULE_INPUT_PATH)", "-o", "<@(_outputs)",
              ],
            },
          ],
          "libraries": ["-L<(moa_cuda_lib_dir)", "-lcudart_static", "-ldl", "-lrt", "-lpthread"],
        },
      ],
    }],
  ],
}
