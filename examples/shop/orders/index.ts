export { type OrderEvent, type OrderState, orderDecider } from './order.js';
export { createOrderSaga, DEFAULT_ORDER_SAGA_OPTIONS, type OrderSagaOptions } from './order-saga.js';
export type { OrderLookups } from './routes.js';
export { type OrdersService, type OrdersServiceOptions, startOrdersService } from './service.js';
