export type { Backend, DType, HostArray, KvCacheLayer, MoaMask, Tensor } from "./backend.js";
export { type BackendPreference, loadBackend, type NativeStatus, nativeStatus } from "./loader.js";
