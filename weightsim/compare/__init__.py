from weightsim.compare.cka import MinibatchCKA, cka_matrix, kernel_cka, linear_cka, linear_cka_batched

__all__ = ["MinibatchCKA", "cka_matrix", "kernel_cka", "linear_cka", "linear_cka_batched"]
