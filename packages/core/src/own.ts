/**
 * Sets an own enumerable property even for keys like `__proto__`, which plain assignment
 * would treat as the prototype setter (and so silently drop). Used wherever keys come
 * from input files.
 */
export function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}
