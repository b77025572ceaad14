/** Injected by tsup (define) from package.json so `moa --version` needs no file read at run time. */
declare const __MOA_CLI_VERSION__: string;
