/** Runs a bench's main: a failure prints its error and exits non-zero, so scripts can tell. */
export function runBench(main: () => Promise<void>): void {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
