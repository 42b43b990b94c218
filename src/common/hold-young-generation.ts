import { holdYoungGeneration } from './young-generation';

// Imported for this side effect only, first thing in main.ts: ES imports run before the importing module's own
// code, so a call in main.ts itself would come after every module it imports (zod, pino, prom-client) had loaded.
holdYoungGeneration();
