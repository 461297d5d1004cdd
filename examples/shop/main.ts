/**
 * `npm start`: the shop on embedded defaults — one process, SQLite files under FERRY_DATA_DIR
 * (./data), the in-memory bus, the gateway on PORT (3000). Stops cleanly on SIGINT / SIGTERM, and
 * when the npm process that started it ends.
 */
import { relative } from 'node:path';
import { startEmbeddedShop } from './embedded.js';
import { runOnWithoutOutput } from './output-errors.js';
import {
  CONFIGURATION_ERROR_EXIT_CODE,
  checkPortUsable,
  readSettings,
  SettingsError,
  shopLogger,
} from './settings.js';
import { stopOnSignals } from './stop-on-signals.js';

async function main(): Promise<void> {
  runOnWithoutOutput();
  // Read before the (slow) start: an npm gone meanwhile is then noticed too.
  const parentPid = process.ppid;
  const settings = readSettings();
  // Checked before anything starts: every service would start, then the gateway fail to listen.
  await checkPortUsable(settings.port, 'npm start');
  const log = shopLogger('shop', settings.logLevel);
  // Nothing said before the start: a refusal is then the one line the shop prints, whatever the
  // LOG_LEVEL, and the banner below names the data folder.
  const lifecycle = stopOnSignals<Awaited<ReturnType<typeof startEmbeddedShop>>>({
    close: (shop) => shop.close(),
    onStop: (reason) => {
      log.info(`${reason}: stopping`);
      // Whatever happens, gone within 10 s: what is committed is in the SQLite files.
      setTimeout(() => {
        log.warn('still stopping after 10 s: exiting anyway');
        process.exit(1);
      }, 10_000).unref();
    },
    onCloseError: (error) =>
      log.error(`stopping failed: ${error instanceof Error ? error.message : String(error)}`),
    parentPid,
  });
  const shop = await lifecycle.started(
    startEmbeddedShop({
      dataDir: settings.dataDir,
      port: settings.port,
      adminToken: settings.adminToken,
      logger: (service) => shopLogger(service, settings.logLevel),
    }),
  );
  if (shop === undefined) return;

  const url = shop.url.replace('127.0.0.1', 'localhost');
  const near = relative(process.cwd(), settings.dataDir) || '.';
  const dir = near.startsWith('..') ? settings.dataDir : near;
  const token = {
    generated: `${shop.adminToken}   (generated, kept in ${dir}/admin-token; set FERRY_ADMIN_TOKEN to choose one)`,
    file: `${shop.adminToken}   (from ${dir}/admin-token; set FERRY_ADMIN_TOKEN to choose another)`,
    FERRY_ADMIN_TOKEN: '(the value of FERRY_ADMIN_TOKEN)',
  }[shop.adminTokenSource];
  process.stdout.write(
    [
      '',
      `Ferry shop (embedded) is ready at ${url}`,
      `  data:        ${dir}/ (one SQLite file per service) · bus: in memory, no broker`,
      `  admin token: ${token}`,
      '',
      'Try it:',
      `  curl -s -X POST ${url}/users -H 'content-type: application/json' \\`,
      `       -d '{"name":"Ada","email":"ada@example.com"}'`,
      `  curl -s -X POST ${url}/orders -H 'content-type: application/json' \\`,
      `       -d '{"userId":"<id from above>","items":[{"productId":"green-tea","quantity":2}]}'`,
      `  curl -s ${url}/orders/<order id>`,
      '',
      'Ctrl-C stops it; orders in flight complete after the next start.',
      '',
    ].join('\n'),
  );
}

main().catch((error: unknown) => {
  const message = error instanceof SettingsError || error instanceof Error ? error.message : String(error);
  process.stderr.write(`The shop could not start: ${message}\n`);
  // Taken between the check and the listen: a setting all the same.
  const portTaken = (error as { code?: string }).code === 'EADDRINUSE';
  if (portTaken) {
    process.stderr.write(
      'Another program uses that port: set PORT to another one, e.g. PORT=3001 npm start\n',
    );
  }
  process.exit(error instanceof SettingsError || portTaken ? CONFIGURATION_ERROR_EXIT_CODE : 1);
});
