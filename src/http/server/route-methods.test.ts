import { describe, expect, it } from 'vitest';
import { pathPattern, RouteMethods } from './route-methods.js';

describe('pathPattern', () => {
  it.each([
    ['/orders', '/orders', true],
    ['/orders', '/orders/', false],
    ['/orders', '/Orders', false],
    ['/orders/:id', '/orders/42', true],
    ['/orders/:id', '/orders/', false],
    ['/orders/:id', '/orders/42/cancel', false],
    ['/orders/:id/cancel', '/orders/42/cancel', true],
    ['/orders/:id(^\\d+$)', '/orders/42', true],
    ['/flights/:from-:to', '/flights/lhr-jfk', true],
    ['/flights/:from-:to', '/flights/lhr', false],
    ['/v/:a.:b', '/v/1.2', true],
    ['/v/:a]:b', '/v/1]2', true],
    ['/files/*', '/files/a/b/c', true],
    ['/files/*', '/file', false],
    ['/time::now', '/time:now', true],
    ['/a.b', '/aXb', false],
    ['/a+(b)', '/a+(b)', true],
  ])('%s matches %s: %s', (url, path, matches) => {
    expect(pathPattern(url).test(path)).toBe(matches);
  });

  it('ends a parameter at the character after it, so parameters sharing a segment never backtrack', () => {
    // Lazy `[^/]+?` between four parameters backtracks over a long segment for minutes (a ReDoS on
    // the 404 path); a class excluding the next literal cannot.
    expect(pathPattern('/x/:a-:b-:c.:d').source).toBe('^\\/x\\/[^/\\-]+-[^/\\-]+-[^/.]+\\.[^/]+$');
    expect(pathPattern('/x/:a-:b-:c.:d').test(`/x/${'-'.repeat(8000)}/`)).toBe(false);
  });

  it('ignores case when the router does', () => {
    expect(pathPattern('/orders', false).test('/ORDERS')).toBe(true);
  });
});

describe('RouteMethods', () => {
  it('names every method served at a path, HEAD with GET, sorted; none for an unknown path', () => {
    const routes = new RouteMethods();
    routes.add('/orders', 'POST');
    routes.add('/orders/:id', 'GET');
    routes.add('/orders/:id', ['delete', 'PATCH']);
    routes.add('/orders/:id/cancel', 'POST');
    expect(routes.allowed('/orders')).toEqual(['POST']);
    expect(routes.allowed('/orders/7?x=1')).toEqual(['DELETE', 'GET', 'HEAD', 'PATCH']);
    expect(routes.allowed('/orders/7/cancel')).toEqual(['POST']);
    expect(routes.allowed('/users')).toEqual([]);
    expect(routes.allowed('/orders/')).toEqual([]);
  });

  it('takes a trailing slash as none when the router ignores it', () => {
    const routes = new RouteMethods({ ignoreTrailingSlash: true });
    routes.add('/orders', 'POST');
    expect(routes.allowed('/orders/')).toEqual(['POST']);
    expect(routes.allowed('/')).toEqual([]);
  });
});
