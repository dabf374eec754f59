/**
 * Builds the real PE corpus (test/helpers/pe-corpus.ts) from Debian packages: `apt-get download` (no root,
 * but apt's package lists must exist) + `dpkg-deb -x`, about 130 MB downloaded and ~100 PE files kept.
 *   node --import tsx scripts/pe-corpus.ts [OUT_DIR]     (default $MARSIGN_CORPUS_DIR or .cache/pe-corpus)
 *   npm run pe-corpus
 * Does nothing when OUT_DIR already holds the corpus of the current recipe. Tests build it on first use
 * through peCorpus() (test/helpers/env.ts). Never commit it: third-party binaries.
 * Exit 0: built or already there (the path on stdout); 3: cannot be built here (no apt, no package lists, no
 * network; the reason on stdout, one line); 1: a bug.
 */
import { resolve } from 'node:path';
import { CorpusUnavailableError, buildCorpus, corpusDir } from '../test/helpers/pe-corpus.js';

const out = process.argv[2] ? resolve(process.argv[2]) : corpusDir();
try {
  const files = buildCorpus(out, (s) => console.error(s));
  console.log(`${files.length} PE files in ${out}`);
} catch (e) {
  if (e instanceof CorpusUnavailableError) {
    console.log(e.message);
    process.exit(3);
  }
  throw e;
}
